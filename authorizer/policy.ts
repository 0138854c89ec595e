// Who may call each AuthorizerService RPC, by the role in the caller's
// certificate (common/identity.ts). Enforced before any handler when the
// authorizer runs with mTLS (common/authz.ts); an RPC missing here is refused.
import { namesCaller, type AccessPolicy, type AccessRule } from '../common/authz.js';
import { ERROR_DOMAIN } from './handlers.js';

/** Only an issuer, and only in its own name: issuer_id must be the certificate's issuer id. */
const issuerInOwnName: AccessRule = {
  allow: ['issuer'],
  bind: (peer, req: { issuerId: string }) => namesCaller('issuer_id', req.issuerId, peer),
};

export const authorizerPolicy: AccessPolicy = {
  service: 'tapcredit.authorizer.v1.AuthorizerService',
  domain: ERROR_DOMAIN,
  rules: {
    // The card issuer.
    AuthorizeEnrollment: issuerInOwnName,
    Deduct: issuerInOwnName,
    RevokeAgreement: issuerInOwnName,

    // Administration of riders' accounts.
    OpenAccount: { allow: ['ops'] },
    TopUp: { allow: ['ops'] },
    SetAccountState: { allow: ['ops'] },
    GetAccount: { allow: ['ops'] },
    ListLedgerEntries: { allow: ['ops'] },
  },
};
