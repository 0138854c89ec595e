// gRPC handlers of AuthorizerService: validate the whole request, call the
// domain, map the result to the proto. No business rules live here.
import { audited, listAuditEntries } from '../common/audit.js';
import type { Db } from '../common/db.js';
import { fingerprint } from '../common/ids.js';
import type { Logger } from '../common/log.js';
import { unaryHandlers, type AsyncHandlers } from '../common/server.js';
import { peerIdentity } from '../common/tls.js';
import { Violations, pageSize } from '../common/validate.js';
import {
  AccountState,
  AgreementState,
  AuthorizeEnrollmentRequest,
  DeductDeclineReason,
  DeductStatus,
  TopUpRequest,
  TransferKind,
  type Account,
  type Agreement,
  type AuthorizerServiceServer,
  type DeductItem,
  type DeductResult,
  type LedgerEntry,
  type RiderTokens,
} from '../gen/tapcredit/authorizer/v1/authorizer.js';
import type { Money } from '../gen/tapcredit/type/v1/money.js';
import type { Rider } from '../gen/tapcredit/type/v1/rider.js';
import { getAccount, listLedgerEntries, openAccount, setAccountState, topUp, type AccountView } from './accounts.js';
import { authorizeEnrollment, revokeAgreement, type AgreementView } from './agreements.js';
import { deduct, type DeclineReason, type DeductItemInput, type DeductOutcome } from './deductions.js';
import { holderDigest } from './holders.js';
import type { LedgerEntryView, TransferKind as DomainTransferKind } from './ledger.js';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from './passwords.js';
import { refreshTokens, setRiderPassword, signIn, signOut, type RiderTokens as DomainTokens, type SignInDeps } from './sign-in.js';
import { publishedKeySet, rotateSigningKey } from './signing-keys.js';

export const ERROR_DOMAIN = 'authorizer.tapcredit';

const PHONE_PATTERN = /^\+[1-9][0-9]{1,14}$/;

const money = (currencyCode: string, minorUnits: bigint): Money => ({ currencyCode, minorUnits: minorUnits.toString() });

function toAccount(a: AccountView): Account {
  return {
    accountId: a.accountId,
    // Not returned: the authorizer keeps only keyed hashes of the holder's details (authorizer/holders.ts).
    holder: undefined,
    state: a.state === 'ACTIVE' ? AccountState.ACCOUNT_STATE_ACTIVE : AccountState.ACCOUNT_STATE_FROZEN,
    balance: money(a.currency, a.balance),
    creditLimit: money(a.currency, a.creditLimit),
    available: money(a.currency, a.available),
    openedAt: a.openedAt,
  };
}

const TRANSFER_KINDS: Record<DomainTransferKind, TransferKind> = {
  TOP_UP: TransferKind.TRANSFER_KIND_TOP_UP,
  FARE: TransferKind.TRANSFER_KIND_FARE,
  SETTLEMENT: TransferKind.TRANSFER_KIND_SETTLEMENT,
};

const toLedgerEntry = (e: LedgerEntryView): LedgerEntry => ({
  entryId: e.entryId,
  transferId: e.transferId,
  kind: TRANSFER_KINDS[e.kind],
  amount: money(e.currency, e.amount),
  balanceAfter: money(e.currency, e.balanceAfter),
  reference: e.reference,
  bookedAt: e.bookedAt,
});

const DECLINE_REASONS: Record<DeclineReason, DeductDeclineReason> = {
  INSUFFICIENT_FUNDS: DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS,
  AGREEMENT_REVOKED: DeductDeclineReason.DEDUCT_DECLINE_REASON_AGREEMENT_REVOKED,
  ACCOUNT_FROZEN: DeductDeclineReason.DEDUCT_DECLINE_REASON_ACCOUNT_FROZEN,
  LIMIT_EXCEEDED: DeductDeclineReason.DEDUCT_DECLINE_REASON_LIMIT_EXCEEDED,
};

function toDeductResult(o: DeductOutcome): DeductResult {
  const base = { requestId: o.requestId, deductionId: '', declineReason: DeductDeclineReason.DEDUCT_DECLINE_REASON_UNSPECIFIED, errorReason: '', message: '' };
  switch (o.status) {
    case 'DEBITED':
      return { ...base, status: DeductStatus.DEDUCT_STATUS_DEBITED, deductionId: o.deductionId };
    case 'DECLINED':
      return { ...base, status: DeductStatus.DEDUCT_STATUS_DECLINED, declineReason: DECLINE_REASONS[o.declineReason], message: o.message };
    case 'REJECTED':
      return { ...base, status: DeductStatus.DEDUCT_STATUS_REJECTED, errorReason: o.errorReason, message: o.message };
  }
}

const toAgreement = (a: AgreementView): Agreement => ({
  agreementId: a.agreementId,
  accountId: a.accountId,
  issuerId: a.issuerId,
  cardId: a.cardId,
  state: a.state === 'ACTIVE' ? AgreementState.AGREEMENT_STATE_ACTIVE : AgreementState.AGREEMENT_STATE_REVOKED,
  createdAt: a.createdAt,
  revokedAt: a.revokedAt,
});

function checkRider(v: Violations, field: string, rider: Rider | undefined): void {
  if (!rider) {
    v.add(field, 'is required');
    return;
  }
  v.text(`${field}.name`, rider.name);
  if (!PHONE_PATTERN.test(rider.phoneNumber)) v.add(`${field}.phone_number`, 'must be an E.164 number, e.g. "+8613800138000"');
}

export interface HandlerDeps {
  db: Db;
  log: Logger;
  maxDebitMinorUnits: bigint;
  /** Called after a Deduct batch: debits wait in the settlement outbox. */
  onDeducted(): void;
  /** Called with every Deduct batch's items and outcomes (metrics and the per-tap log). */
  onDebits?(items: DeductItem[], outcomes: DeductOutcome[]): void;
  /** Secret key of the holder digests (authorizer/holders.ts). */
  holderKey: Buffer;
  /** Rider sign-in (authorizer/sign-in.ts); its db and holderKey are the ones above. */
  signIn: Omit<SignInDeps, 'db' | 'holderKey'>;
}

const toTokens = (t: DomainTokens): RiderTokens => ({
  accessToken: t.accessToken,
  accessTokenExpiresAt: t.accessTokenExpiresAt,
  refreshToken: t.refreshToken,
  refreshTokenExpiresAt: t.refreshTokenExpiresAt,
});

/** Checks a password's length; its characters are the rider's choice. */
function checkPassword(v: Violations, field: string, password: string): void {
  if ([...password].length < MIN_PASSWORD_LENGTH || [...password].length > MAX_PASSWORD_LENGTH) {
    v.add(field, `must be ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters`);
  }
}

export function authorizerHandlers(deps: HandlerDeps): AuthorizerServiceServer {
  const { db } = deps;
  const signInDeps: SignInDeps = { ...deps.signIn, db, holderKey: deps.holderKey };
  const handlers: AsyncHandlers<AuthorizerServiceServer> = {
    listAuditEntries: (req) => listAuditEntries(db, req),

    async setRiderPassword(req, call) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      checkPassword(v, 'new_password', req.newPassword);
      // Only ops sets a password without knowing the current one (on a plaintext server there are no roles).
      const ops = peerIdentity(call)?.role === 'ops' || (!peerIdentity(call) && req.currentPassword === '');
      if (!ops && req.currentPassword === '') v.add('current_password', 'is required (the phone app changes a password only with the current one)');
      if (req.currentPassword.length > MAX_PASSWORD_LENGTH) v.add('current_password', `must be at most ${MAX_PASSWORD_LENGTH} characters`);
      v.throwIfAny();
      const setAt = await setRiderPassword(signInDeps, req.accountId, req.newPassword, ops ? undefined : req.currentPassword);
      return { setAt };
    },

    async signIn(req) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      if (req.password === '' || req.password.length > MAX_PASSWORD_LENGTH) v.add('password', `is required, at most ${MAX_PASSWORD_LENGTH} characters`);
      v.id('audience', req.audience);
      v.throwIfAny();
      return { tokens: toTokens(await signIn(signInDeps, req.accountId, req.password, req.audience)) };
    },

    async refreshToken(req) {
      const v = new Violations();
      if (!/^[A-Za-z0-9_-]{43}$/.test(req.refreshToken)) v.add('refresh_token', 'must be a refresh token of SignIn or RefreshToken');
      v.id('audience', req.audience);
      v.throwIfAny();
      return { tokens: toTokens(await refreshTokens(signInDeps, req.refreshToken, req.audience)) };
    },

    async signOut(req) {
      const v = new Violations();
      if (!/^[A-Za-z0-9_-]{43}$/.test(req.refreshToken)) v.add('refresh_token', 'must be a refresh token of SignIn or RefreshToken');
      v.throwIfAny();
      await signOut(signInDeps, req.refreshToken);
      return {};
    },

    async getJwks() {
      return { jwksJson: JSON.stringify(await publishedKeySet(db)), tokenIssuer: deps.signIn.authorizerId };
    },

    async rotateSigningKey(req) {
      const keyId = await rotateSigningKey(db, deps.holderKey, { retirePrevious: req.retirePrevious });
      const published = (await publishedKeySet(db)).keys.map((k) => k.kid!);
      return { keyId, publishedKeyIds: published };
    },

    async openAccount(req) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      checkRider(v, 'holder', req.holder);
      const currencyOk = v.currency('currency_code', req.currencyCode);
      let creditLimit = 0n;
      if (req.creditLimit) {
        creditLimit = v.money('credit_limit', req.creditLimit, { nonNegative: true }) ?? 0n;
        if (currencyOk && req.creditLimit.currencyCode !== req.currencyCode) v.add('credit_limit.currency_code', 'must be the account currency');
      }
      v.throwIfAny();
      const account = await openAccount(db, {
        accountId: req.accountId,
        holder: holderDigest(deps.holderKey, req.holder!),
        currency: req.currencyCode,
        creditLimit,
      });
      return { account: toAccount(account) };
    },

    async topUp(req) {
      const v = new Violations();
      v.id('request_id', req.requestId);
      v.id('account_id', req.accountId);
      const amount = v.money('amount', req.amount, { positive: true });
      v.throwIfAny();
      const result = await topUp(db, {
        requestId: req.requestId,
        fingerprint: fingerprint(TopUpRequest.encode(req).finish()),
        accountId: req.accountId,
        amount: amount!,
        currency: req.amount!.currencyCode,
      });
      return { account: toAccount(result.account), transferId: result.transferId };
    },

    async setAccountState(req) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      v.enumValue('state', req.state, [AccountState.ACCOUNT_STATE_ACTIVE, AccountState.ACCOUNT_STATE_FROZEN]);
      v.throwIfAny();
      const account = await setAccountState(db, req.accountId, req.state === AccountState.ACCOUNT_STATE_ACTIVE ? 'ACTIVE' : 'FROZEN');
      return { account: toAccount(account) };
    },

    async getAccount(req) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      v.throwIfAny();
      return { account: toAccount(await getAccount(db, req.accountId)) };
    },

    async listLedgerEntries(req) {
      const v = new Violations();
      v.id('account_id', req.accountId);
      const size = pageSize(v, req.pageSize, 50, 500);
      v.throwIfAny();
      const page = await listLedgerEntries(db, req.accountId, size, req.pageToken);
      return { entries: page.entries.map(toLedgerEntry), nextPageToken: page.nextPageToken };
    },

    async authorizeEnrollment(req) {
      const v = new Violations();
      v.id('request_id', req.requestId);
      v.id('issuer_id', req.issuerId);
      v.id('account_id', req.accountId);
      checkRider(v, 'rider', req.rider);
      v.id('card_id', req.cardId);
      v.throwIfAny();
      const rider = holderDigest(deps.holderKey, req.rider!);
      // The stored fingerprint covers the rider's digest, not the clear details.
      const keyed = { ...req, rider: { name: rider.nameHash, phoneNumber: rider.phoneHash } };
      const agreement = await authorizeEnrollment(db, {
        requestId: req.requestId,
        fingerprint: fingerprint(AuthorizeEnrollmentRequest.encode(keyed).finish()),
        issuerId: req.issuerId,
        accountId: req.accountId,
        rider,
        cardId: req.cardId,
      });
      return { agreement: toAgreement(agreement) };
    },

    async revokeAgreement(req) {
      const v = new Violations();
      v.id('issuer_id', req.issuerId);
      v.id('agreement_id', req.agreementId);
      v.throwIfAny();
      return { agreement: toAgreement(await revokeAgreement(db, req.agreementId, Date.now(), req.issuerId)) };
    },

    async deduct(req) {
      const v = new Violations();
      v.id('issuer_id', req.issuerId);
      const items: DeductItemInput[] = [];
      if (v.batch('items', req.items)) {
        const seen = new Map<string, number>();
        req.items.forEach((item, i) => {
          const field = `items[${i}]`;
          if (v.id(`${field}.request_id`, item.requestId)) {
            const earlier = seen.get(item.requestId);
            if (earlier !== undefined) v.add(`${field}.request_id`, `repeats items[${earlier}].request_id; each request id at most once per batch`);
            else seen.set(item.requestId, i);
          }
          v.id(`${field}.agreement_id`, item.agreementId);
          if (item.tapId) v.id(`${field}.tap_id`, item.tapId);
          const amount = v.money(`${field}.amount`, item.amount, { positive: true });
          if (amount !== undefined) {
            items.push({ requestId: item.requestId, tapId: item.tapId || undefined, agreementId: item.agreementId, amount, currency: item.amount!.currencyCode, tappedAt: item.tappedAt });
          }
        });
      }
      v.throwIfAny();
      const outcomes = await deduct(db, req.issuerId, items, { maxDebitMinorUnits: deps.maxDebitMinorUnits });
      deps.onDebits?.(req.items, outcomes);
      if (outcomes.some((o) => o.status === 'DEBITED')) deps.onDeducted();
      return { results: outcomes.map(toDeductResult) };
    },
  };
  // Every ops action, and every ops read of a rider's account, goes to the audit trail.
  const withAudit = audited(db, 'AuthorizerService', ['openAccount', 'topUp', 'setAccountState', 'getAccount', 'listLedgerEntries', 'setRiderPassword', 'rotateSigningKey'], handlers);
  return unaryHandlers<AuthorizerServiceServer>(ERROR_DOMAIN, deps.log, withAudit);
}
