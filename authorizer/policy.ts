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
    RotateSigningKey: { allow: ['ops'] },
    ListAuditEntries: { allow: ['ops'] },

    // Rider sign-in, from the phone app (the rider proves who they are with
    // their password; the app's certificate only says it is the app).
    // SetRiderPassword from the phone needs the current password (handlers.ts).
    SetRiderPassword: { allow: ['ops', 'phone'] },
    SignIn: { allow: ['phone'] },
    RefreshToken: { allow: ['phone'] },
    SignOut: { allow: ['phone'] },
    // The public keys that verify riders' tokens: for the issuers that verify them.
    GetJwks: { allow: ['issuer', 'phone', 'ops'] },
  },
};
