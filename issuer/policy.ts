// Who may call each IssuerService RPC, by the role in the caller's
// certificate (common/identity.ts). Enforced before any handler when the
// issuer runs with mTLS (common/authz.ts); an RPC missing here is refused.
import { namesCaller, type AccessPolicy } from '../common/authz.js';
import type { PeerIdentity } from '../common/identity.js';
import type { SettleRequest, TapReportRequest, WatchDenyListRequest } from '../gen/tapcredit/issuer/v1/issuer.js';
import { ERROR_DOMAIN } from './handlers.js';

/** A terminal reports only its own taps: the batch's terminal id and every tap's must be the certificate's. */
function ownTaps(peer: PeerIdentity, req: TapReportRequest): string | undefined {
  const other = req.taps.find((t) => t.terminalId !== peer.name);
  if (other) return `tap ${JSON.stringify(other.tapId)} was taken at terminal ${JSON.stringify(other.terminalId)}, not by the caller (${peer.uri})`;
  return namesCaller('terminal_id', req.terminalId, peer);
}

export const issuerPolicy: AccessPolicy = {
  service: 'tapcredit.issuer.v1.IssuerService',
  domain: ERROR_DOMAIN,
  rules: {
    // The rider's phone app (ops may act for a rider at a service desk).
    EnrollCard: { allow: ['phone', 'ops'] },
    UnenrollCard: { allow: ['phone', 'ops'] },
    ReportCardLost: { allow: ['phone', 'ops'] },
    RetryDebts: { allow: ['phone', 'ops'] },
    GetCard: { allow: ['phone', 'ops'] },
    ListCardTaps: { allow: ['phone', 'ops'] },

    // Terminals, each for itself.
    TapReport: { allow: ['terminal'], bind: ownTaps },
    WatchDenyList: {
      allow: ['terminal', 'ops'],
      bind: (peer, req: WatchDenyListRequest) =>
        peer.role === 'terminal' && req.terminalId !== '' ? namesCaller('terminal_id', req.terminalId, peer) : undefined,
    },
    ListDenyListChanges: { allow: ['terminal', 'ops'] },

    // The credit authorizer, in its own name.
    Settle: { allow: ['authorizer'], bind: (peer, req: SettleRequest) => namesCaller('authorizer_id', req.authorizerId, peer) },

    // Administration.
    AddToDenyList: { allow: ['ops'] },
    RemoveFromDenyList: { allow: ['ops'] },
    GetReconciliationReport: { allow: ['ops'] },
  },
};
