// The catalogue of error reasons: every reason a tapcredit server puts in the
// ErrorInfo of a failed call, with its gRPC code, when it happens and which
// RPCs can answer it. Errors are made from this table only (errors.ts
// apiError), so a reason cannot be used without its entry, and docs/api.md's
// error tables are generated from it (scripts/gen-api-docs.ts).
import { status } from '@grpc/grpc-js';

export interface ReasonEntry {
  code: status;
  /** When it is answered, and what the caller should do. */
  when: string;
  /** The RPCs that can answer it ("Service.Method"); ['*'] for every RPC of every service. */
  rpcs: readonly string[];
}

const ENROLL = 'IssuerService.EnrollCard';
const CARD_READS = ['IssuerService.GetCard', 'IssuerService.ListCardTaps'];
const CARD_ACTIONS = ['IssuerService.UnenrollCard', 'IssuerService.ReportCardLost', 'IssuerService.RetryDebts'];

export const ERROR_REASONS = {
  // --- every RPC ---
  INVALID_ARGUMENT: {
    code: status.INVALID_ARGUMENT,
    when: 'A field is missing or malformed. The BadRequest detail names every bad field; nothing was changed.',
    rpcs: ['*'],
  },
  MALFORMED_REQUEST: { code: status.INVALID_ARGUMENT, when: 'The request bytes do not parse as the RPC\'s request message.', rpcs: ['*'] },
  PEER_IDENTITY_MISSING: {
    code: status.UNAUTHENTICATED,
    when: 'The client certificate carries no tapcredit identity (a SPIFFE URI spiffe://tapcredit/<role>/<name>).',
    rpcs: ['*'],
  },
  PEER_CERTIFICATE_REVOKED: {
    code: status.UNAUTHENTICATED,
    when: 'The client certificate is on the CA\'s revocation list (`npm run certs -- --revoke <name>`). Get a new certificate.',
    rpcs: ['*'],
  },
  RPC_NOT_IN_POLICY: { code: status.PERMISSION_DENIED, when: 'The RPC is open to no caller in the service\'s access policy.', rpcs: ['*'] },
  PEER_ROLE_NOT_ALLOWED: { code: status.PERMISSION_DENIED, when: 'The caller\'s role may not call this RPC (the message names the roles that may).', rpcs: ['*'] },
  PEER_IDENTITY_MISMATCH: {
    code: status.PERMISSION_DENIED,
    when: 'The caller acts for another identity than its certificate\'s, e.g. a terminal reporting another terminal\'s taps.',
    rpcs: ['*'],
  },
  ACCESS_TOKEN_MISSING: {
    code: status.UNAUTHENTICATED,
    when: 'A rider call from the phone app carries no "authorization: Bearer <access token>" metadata. Sign in (AuthorizerService.SignIn) first.',
    rpcs: ['*'],
  },
  ACCESS_TOKEN_INVALID: {
    code: status.UNAUTHENTICATED,
    when: 'The access token does not verify: bad signature, a key that was retired, another audience or issuer, not yet valid, or malformed. Sign in again.',
    rpcs: ['*'],
  },
  ACCESS_TOKEN_EXPIRED: { code: status.UNAUTHENTICATED, when: 'The access token has expired. Refresh it (AuthorizerService.RefreshToken) and call again.', rpcs: ['*'] },
  RATE_LIMITED: {
    code: status.RESOURCE_EXHAUSTED,
    when: 'The rider or operator called too often (per-identity rate limit), or a card saw too many enrollment attempts. The RetryInfo detail says when to retry.',
    rpcs: ['*'],
  },
  CONCURRENT_UPDATE: {
    code: status.ABORTED,
    when: 'The request met a concurrent update (a deadlock or serialization failure) and was rolled back. Send it again: every mutation is idempotent by its id.',
    rpcs: ['*'],
  },
  DATABASE_UNAVAILABLE: {
    code: status.UNAVAILABLE,
    when: 'The server lost its database connection while answering (a database restart or failover). Whether the request took effect is unknown: send it again with the same id (every mutation is idempotent by its id).',
    rpcs: ['*'],
  },
  STORAGE_FULL: {
    code: status.UNAVAILABLE,
    when: 'The server\'s disk or database is full (SQLite SQLITE_FULL, PostgreSQL class 53100), so it cannot record the request; nothing was changed. Send it again later with the same id: the server\'s health is NOT_SERVING until it can write again.',
    rpcs: ['*'],
  },
  INTERNAL: { code: status.INTERNAL, when: 'A fault inside the server; the server log has the details. Nothing is promised about the outcome: retry with the same id.', rpcs: ['*'] },

  // --- idempotency ---
  REQUEST_ID_REUSED: {
    code: status.ALREADY_EXISTS,
    when: 'The request id (or settlement id) was used before with a different request. Use a new id for a new request.',
    rpcs: [ENROLL, 'IssuerService.Settle', 'AuthorizerService.AuthorizeEnrollment', 'AuthorizerService.TopUp'],
  },

  // --- the issuer ---
  WRONG_ISSUER: { code: status.FAILED_PRECONDITION, when: 'The card was issued by another issuer.', rpcs: [ENROLL] },
  CARD_AUTHENTICATION_FAILED: { code: status.FAILED_PRECONDITION, when: 'The card\'s proof (its zero-amount debit MAC) does not verify: not a genuine card of this issuer.', rpcs: [ENROLL] },
  CARD_EXPIRED: { code: status.FAILED_PRECONDITION, when: 'The card is past its expiry date.', rpcs: [ENROLL] },
  CARD_LOST: { code: status.FAILED_PRECONDITION, when: 'The card was reported lost; it cannot be enrolled or changed again. Enroll a new card.', rpcs: [ENROLL, 'IssuerService.UnenrollCard'] },
  CARD_PROOF_REPLAYED: {
    code: status.FAILED_PRECONDITION,
    when: 'The proof\'s card counter is not above the highest the issuer has seen: an old reading. Read the card again.',
    rpcs: [ENROLL],
  },
  CARD_ALREADY_ENROLLED: { code: status.FAILED_PRECONDITION, when: 'The card is bound to an account already. Unenroll it first.', rpcs: [ENROLL] },
  ENROLLMENT_IN_PROGRESS: {
    code: status.ABORTED,
    when: 'Another enrollment of the card (another request id) is in progress. Retry later; it is abandoned after 10 minutes without completing.',
    rpcs: [ENROLL],
  },
  ENROLLMENT_ABANDONED: {
    code: status.ABORTED,
    when: 'This request id\'s enrollment did not complete in time and its agreement was revoked. Enroll again with a new request id.',
    rpcs: [ENROLL],
  },
  CARD_NOT_FOUND: { code: status.NOT_FOUND, when: 'The issuer knows no card with this id.', rpcs: [...CARD_READS, ...CARD_ACTIONS] },
  ACCOUNT_MISMATCH: { code: status.PERMISSION_DENIED, when: 'The card is not bound to the account named in the request.', rpcs: ['IssuerService.UnenrollCard', 'IssuerService.ReportCardLost'] },
  AUTHORIZER_UNAVAILABLE: {
    code: status.UNAVAILABLE,
    when: 'The credit authorizer did not answer in time. Retry with the same request id.',
    rpcs: [ENROLL, 'IssuerService.RetryDebts', 'IssuerService.UnenrollCard', 'IssuerService.ReportCardLost', ...CARD_READS],
  },
  DEBIT_OUTCOME_PENDING: {
    code: status.UNAVAILABLE,
    when: 'Taps of the settlement still await their debit answer at the issuer. Send the same settlement again later.',
    rpcs: ['IssuerService.Settle'],
  },
  TOTAL_MISMATCH: { code: status.INVALID_ARGUMENT, when: 'The settlement\'s total is not the sum of its items in one currency.', rpcs: ['IssuerService.Settle'] },

  // --- the authorizer (the issuer passes those of AuthorizeEnrollment on to EnrollCard's caller) ---
  ACCOUNT_NOT_FOUND: { code: status.NOT_FOUND, when: 'No account with this id.', rpcs: ['AuthorizerService.AuthorizeEnrollment', 'AuthorizerService.TopUp', 'AuthorizerService.SetAccountState', 'AuthorizerService.GetAccount', 'AuthorizerService.ListLedgerEntries', 'AuthorizerService.SetRiderPassword', ENROLL] },
  ACCOUNT_ALREADY_EXISTS: { code: status.ALREADY_EXISTS, when: 'An account with this id exists with other details.', rpcs: ['AuthorizerService.OpenAccount'] },
  CURRENCY_MISMATCH: { code: status.FAILED_PRECONDITION, when: 'The amount is in another currency than the account\'s.', rpcs: ['AuthorizerService.TopUp'] },
  RIDER_MISMATCH: { code: status.FAILED_PRECONDITION, when: 'The rider\'s details do not match the account\'s holder.', rpcs: ['AuthorizerService.AuthorizeEnrollment', ENROLL] },
  ACCOUNT_FROZEN: { code: status.FAILED_PRECONDITION, when: 'The account is frozen.', rpcs: ['AuthorizerService.AuthorizeEnrollment', ENROLL] },
  ACCOUNT_NOT_ELIGIBLE: { code: status.FAILED_PRECONDITION, when: 'The account has no funds or credit available for an agreement.', rpcs: ['AuthorizerService.AuthorizeEnrollment', ENROLL] },
  SIGN_IN_FAILED: { code: status.UNAUTHENTICATED, when: 'The account id and password do not match (an unknown account answers the same). Nothing tells which was wrong.', rpcs: ['AuthorizerService.SignIn', 'AuthorizerService.SetRiderPassword'] },
  REFRESH_TOKEN_INVALID: {
    code: status.UNAUTHENTICATED,
    when: 'The refresh token is unknown, expired, revoked or already used (a reuse revokes its whole sign-in). Sign in again.',
    rpcs: ['AuthorizerService.RefreshToken'],
  },
  AUDIENCE_UNKNOWN: { code: status.NOT_FOUND, when: 'The audience names no issuer this authorizer works with.', rpcs: ['AuthorizerService.SignIn', 'AuthorizerService.RefreshToken'] },
  AGREEMENT_NOT_FOUND: { code: status.NOT_FOUND, when: 'No agreement with this id for this issuer.', rpcs: ['AuthorizerService.RevokeAgreement'] },
  INSUFFICIENT_FUNDS: { code: status.FAILED_PRECONDITION, when: 'The account cannot pay the transfer: balance plus credit limit is below the amount.', rpcs: ['AuthorizerService.TopUp'] },
  BALANCE_OUT_OF_RANGE: { code: status.FAILED_PRECONDITION, when: 'The transfer would take a balance out of the int64 range.', rpcs: ['AuthorizerService.TopUp'] },
} as const satisfies Record<string, ReasonEntry>;

export type ErrorReason = keyof typeof ERROR_REASONS;

/**
 * Reasons carried inside results rather than as a call's error: a batch RPC
 * answers per item, so one bad item does not fail the others.
 */
export const RESULT_REASONS: Record<string, { rpc: string; when: string }> = {
  TAP_ID_CONFLICT: { rpc: 'IssuerService.TapReport', when: 'The issuer holds another tap under this tap id (two terminals configured with one id). The terminal holds the tap for an operator.' },
  CARD_NOT_ENROLLED: { rpc: 'IssuerService.TapReport', when: 'The tap\'s card is unknown or its agreement is not one the card was bound to: stored REJECTED.' },
  'CARD_EXPIRED (TapReport)': { rpc: 'IssuerService.TapReport', when: 'The tap was taken after the expiry the issuer recorded for the card (whatever the card told the gate): stored REJECTED, nothing is debited.' },
  'CARD_AUTHENTICATION_FAILED (TapReport)': { rpc: 'IssuerService.TapReport', when: 'The tap\'s card proof does not verify: stored REJECTED.' },
  UNKNOWN_TAP: { rpc: 'IssuerService.Settle', when: 'The item names a tap the issuer does not hold.' },
  TAP_NOT_DEDUCTED: { rpc: 'IssuerService.Settle', when: 'The item\'s tap was not debited.' },
  DEDUCTION_ID_MISMATCH: { rpc: 'IssuerService.Settle', when: 'The item\'s deduction id is not the one the issuer stored for the tap.' },
  AMOUNT_MISMATCH: { rpc: 'IssuerService.Settle', when: 'The item\'s amount is not what the tap was charged.' },
  ALREADY_SETTLED: { rpc: 'IssuerService.Settle', when: 'The tap was settled by another settlement.' },
  'REQUEST_ID_REUSED (Deduct)': { rpc: 'AuthorizerService.Deduct', when: 'The item\'s request id was used before with another item: REJECTED.' },
  'AGREEMENT_NOT_FOUND (Deduct)': { rpc: 'AuthorizerService.Deduct', when: 'No agreement with the item\'s id for this issuer: REJECTED.' },
  'CURRENCY_MISMATCH (Deduct)': { rpc: 'AuthorizerService.Deduct', when: 'The item\'s amount is in another currency than the account\'s: REJECTED.' },
  TAP_ALREADY_DEBITED: { rpc: 'AuthorizerService.Deduct', when: 'The tap was debited under another request id (a retried debt): REJECTED, nothing debited twice.' },
};
