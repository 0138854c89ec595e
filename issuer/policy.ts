// Who may call each IssuerService RPC, by the role in the caller's
// certificate (common/identity.ts). Enforced before any handler when the
// issuer runs with mTLS (common/authz.ts); an RPC missing here is refused.
import { namesCaller, type AccessPolicy } from '../common/authz.js';
import type { PeerIdentity } from '../common/identity.js';
import type { EnrollCardRequest, SettleRequest, TapReportRequest, WatchDenyListRequest } from '../gen/tapcredit/issuer/v1/issuer.js';
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
    // The rider's phone app, with the rider's access token (ops may act for
    // any rider at a service desk). A rider enrolls only into their own
    // account; the handlers answer CARD_NOT_FOUND for a card bound to
    // another account, exactly as for an unknown card.
    EnrollCard: {
      allow: ['phone', 'ops'],
      rider: true,
      bind: (_peer, req: EnrollCardRequest, rider) =>
        rider !== undefined && req.accountId !== rider ? `account_id ${JSON.stringify(req.accountId)} is not the signed-in rider's account` : undefined,
    },
    UnenrollCard: { allow: ['phone', 'ops'], rider: true },
    ReportCardLost: { allow: ['phone', 'ops'], rider: true },
    RetryDebts: { allow: ['phone', 'ops'], rider: true },
    GetCard: { allow: ['phone', 'ops'], rider: true },
    ListCardTaps: { allow: ['phone', 'ops'], rider: true },

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
    ListAuditEntries: { allow: ['ops'] },
  },
};
