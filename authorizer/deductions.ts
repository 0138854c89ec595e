// Fare debits. A batch is decided and booked in one transaction: the rows it
// needs are read in a few bulk queries, every item is decided in memory in
// request order (so two fares of one account in a batch see each other), and
// the deductions, transfers and balances are written in bulk. Each request id
// (the tap id) is claimed once: DEBITED and DECLINED are stored and a repeat
// returns them; REJECTED is not stored.
import { asText, chunks, insertRows, retryOnUniqueViolation, toNumber, type Db } from '../common/db.js';
import { newId } from '../common/ids.js';
import { LedgerBook, ledgerAccountId } from './ledger.js';

export type DeclineReason = 'INSUFFICIENT_FUNDS' | 'AGREEMENT_REVOKED' | 'ACCOUNT_FROZEN' | 'LIMIT_EXCEEDED';
export type RejectReason = 'REQUEST_ID_REUSED' | 'AGREEMENT_NOT_FOUND' | 'CURRENCY_MISMATCH' | 'TAP_ALREADY_DEBITED';

export const DEFAULT_MAX_DEBIT_MINOR_UNITS = 100_000n;

export interface DeductItemInput {
  /** Idempotency key of this debit: the tap id, or a new id per retry of a debt. */
  requestId: string;
  /** The tap paid for; defaults to requestId. At most one debit per tap is ever DEBITED. */
  tapId?: string;
  agreementId: string;
  /** Positive minor units. */
  amount: bigint;
  currency: string;
  tappedAt?: Date;
}

export type DeductOutcome =
  | { requestId: string; status: 'DEBITED'; deductionId: string }
  | { requestId: string; status: 'DECLINED'; declineReason: DeclineReason; message: string }
  | { requestId: string; status: 'REJECTED'; errorReason: RejectReason; message: string };

export interface DeductOptions {
  /** Largest single debit; a larger one is declined LIMIT_EXCEEDED. */
  maxDebitMinorUnits?: bigint;
  now?: number;
}

interface StoredDeduction {
  request_id: string;
  tap_id: string | null;
  issuer_id: string;
  agreement_id: string;
  amount: string;
  currency: string;
  status: 'DEBITED' | 'DECLINED';
  deduction_id: string | null;
  decline_reason: DeclineReason | null;
  message: string;
}

interface AgreementRow {
  agreement_id: string;
  issuer_id: string;
  account_id: string;
  agreement_state: 'ACTIVE' | 'REVOKED';
  account_state: 'ACTIVE' | 'FROZEN';
  currency: string;
  ledger_account_id: string;
  revoked_at: string | number | null;
}

function storedOutcome(row: StoredDeduction): DeductOutcome {
  return row.status === 'DEBITED'
    ? { requestId: row.request_id, status: 'DEBITED', deductionId: row.deduction_id! }
    : { requestId: row.request_id, status: 'DECLINED', declineReason: row.decline_reason!, message: row.message };
}

const tapOf = (item: DeductItemInput) => item.tapId || item.requestId;

/** A ride taken before its agreement was revoked is still paid under it. */
const takenBefore = (item: DeductItemInput, revokedAt: string | number | null) =>
  item.tappedAt !== undefined && revokedAt != null && item.tappedAt.getTime() < Number(revokedAt);

/**
 * Debits a batch of fares for an issuer; one outcome per item, in order.
 * Items must be structurally valid with distinct request ids (the handler
 * checks that before calling).
 */
export async function deduct(db: Db, issuerId: string, items: DeductItemInput[], opts: DeductOptions = {}): Promise<DeductOutcome[]> {
  const maxDebit = opts.maxDebitMinorUnits ?? DEFAULT_MAX_DEBIT_MINOR_UNITS;
  const now = opts.now ?? Date.now();
  return retryOnUniqueViolation(() =>
    db.transaction(async (trx) => {
      const stored = new Map<string, StoredDeduction>();
      for (const part of chunks(items.map((i) => i.requestId))) {
        const rows: StoredDeduction[] = await trx('deductions')
          .whereIn('request_id', part)
          .select('request_id', 'tap_id', 'issuer_id', 'agreement_id', 'currency', 'status', 'deduction_id', 'decline_reason', 'message', asText(trx, 'amount'));
        for (const row of rows) stored.set(row.request_id, row);
      }
      // Taps already debited (under any request id): a retry of a debt must never debit twice.
      const debitedTaps = new Set<string>();
      for (const part of chunks([...new Set(items.map(tapOf))])) {
        for (const row of await trx('deductions').whereIn('debited_tap_id', part).select('debited_tap_id')) debitedTaps.add(row.debited_tap_id);
      }

      const agreements = new Map<string, AgreementRow>();
      for (const part of chunks([...new Set(items.map((i) => i.agreementId))])) {
        const rows: AgreementRow[] = await trx('agreements as g')
          .join('accounts as a', 'a.account_id', 'g.account_id')
          .whereIn('g.agreement_id', part)
          .select(
            'g.agreement_id',
            'g.issuer_id',
            'g.account_id',
            'g.state as agreement_state',
            'a.state as account_state',
            'a.currency',
            'a.ledger_account_id',
            'g.revoked_at',
          );
        for (const row of rows) agreements.set(row.agreement_id, row);
      }

      const book = new LedgerBook(trx);
      const ours = [...agreements.values()].filter((g) => g.issuer_id === issuerId);
      await book.load([
        ...ours.map((g) => g.ledger_account_id),
        ...ours.map((g) => ledgerAccountId.issuerPayable(issuerId, g.currency)),
      ]);

      const newRows: Record<string, unknown>[] = [];
      const outcomes = items.map((item): DeductOutcome => {
        const { requestId } = item;
        const tapId = tapOf(item);
        const first = stored.get(requestId);
        if (first) {
          const same =
            (first.tap_id ?? first.request_id) === tapId &&
            first.issuer_id === issuerId &&
            first.agreement_id === item.agreementId &&
            BigInt(first.amount) === item.amount &&
            first.currency === item.currency;
          if (same) return storedOutcome(first);
          return {
            requestId,
            status: 'REJECTED',
            errorReason: 'REQUEST_ID_REUSED',
            message: `request_id ${JSON.stringify(requestId)} was already used with another amount, agreement or currency`,
          };
        }

        const agreement = agreements.get(item.agreementId);
        // Another issuer's agreement is reported as unknown: its existence is not the caller's business.
        if (!agreement || agreement.issuer_id !== issuerId) {
          return { requestId, status: 'REJECTED', errorReason: 'AGREEMENT_NOT_FOUND', message: `agreement ${JSON.stringify(item.agreementId)} does not exist` };
        }
        if (agreement.currency !== item.currency) {
          return {
            requestId,
            status: 'REJECTED',
            errorReason: 'CURRENCY_MISMATCH',
            message: `the account of agreement ${item.agreementId} is in ${agreement.currency}, not ${item.currency}`,
          };
        }

        if (debitedTaps.has(tapId)) {
          return { requestId, status: 'REJECTED', errorReason: 'TAP_ALREADY_DEBITED', message: `tap ${JSON.stringify(tapId)} was already debited` };
        }

        const rider = agreement.ledger_account_id;
        let decline: { reason: DeclineReason; message: string } | undefined;
        if (agreement.agreement_state !== 'ACTIVE' && !takenBefore(item, agreement.revoked_at)) {
          decline = { reason: 'AGREEMENT_REVOKED', message: `agreement ${item.agreementId} was revoked` };
        }
        else if (agreement.account_state !== 'ACTIVE') decline = { reason: 'ACCOUNT_FROZEN', message: `account ${agreement.account_id} is frozen` };
        else if (item.amount > maxDebit) decline = { reason: 'LIMIT_EXCEEDED', message: `amount ${item.amount} exceeds the per-debit limit ${maxDebit}` };
        else {
          const available = book.available(rider)!;
          if (available < item.amount) decline = { reason: 'INSUFFICIENT_FUNDS', message: `available ${available} is below the amount ${item.amount}` };
        }

        const row = {
          request_id: requestId,
          tap_id: tapId,
          issuer_id: issuerId,
          agreement_id: item.agreementId,
          account_id: agreement.account_id,
          amount: item.amount.toString(),
          currency: item.currency,
          tapped_at: item.tappedAt ? item.tappedAt.getTime() : null,
          created_at: now,
        };
        if (decline) {
          newRows.push({ ...row, status: 'DECLINED', deduction_id: null, debited_tap_id: null, decline_reason: decline.reason, message: decline.message });
          return { requestId, status: 'DECLINED', declineReason: decline.reason, message: decline.message };
        }
        const deductionId = newId('ded');
        const payable = ledgerAccountId.issuerPayable(issuerId, item.currency);
        book.useSystemAccount(payable, 'ISSUER_PAYABLE', item.currency, now);
        book.post({
          transferId: deductionId,
          kind: 'FARE',
          debitAccountId: rider,
          creditAccountId: payable,
          amount: item.amount,
          currency: item.currency,
          reference: tapId,
          bookedAt: now,
        });
        debitedTaps.add(tapId);
        newRows.push({ ...row, status: 'DEBITED', deduction_id: deductionId, debited_tap_id: tapId, decline_reason: null, message: '' });
        return { requestId, status: 'DEBITED', deductionId };
      });

      await book.flush();
      // Claiming the request ids: on PostgreSQL a concurrent batch with the
      // same id fails this insert and the whole batch is decided again.
      for (const part of chunks(newRows)) await insertRows(trx, 'deductions', part);
      return outcomes;
    }),
  );
}

export interface DeductionView {
  requestId: string;
  issuerId: string;
  agreementId: string;
  accountId: string;
  amount: bigint;
  currency: string;
  status: 'DEBITED' | 'DECLINED';
  deductionId: string | null;
  declineReason: DeclineReason | null;
  settlementId: string | null;
  settlementStatus: 'MATCHED' | 'MISMATCHED' | null;
  settlementReason: string | null;
  createdAt: Date;
}

/** A stored deduction by request id (tap id), or undefined. */
export async function findDeduction(db: Db, requestId: string): Promise<DeductionView | undefined> {
  const r = await db('deductions')
    .where({ request_id: requestId })
    .first(
      'request_id',
      'issuer_id',
      'agreement_id',
      'account_id',
      'currency',
      'status',
      'deduction_id',
      'decline_reason',
      'settlement_id',
      'settlement_status',
      'settlement_reason',
      'created_at',
      asText(db, 'amount'),
    );
  if (!r) return undefined;
  return {
    requestId: r.request_id,
    issuerId: r.issuer_id,
    agreementId: r.agreement_id,
    accountId: r.account_id,
    amount: BigInt(r.amount),
    currency: r.currency,
    status: r.status,
    deductionId: r.deduction_id,
    declineReason: r.decline_reason,
    settlementId: r.settlement_id,
    settlementStatus: r.settlement_status,
    settlementReason: r.settlement_reason,
    createdAt: new Date(toNumber(r.created_at)),
  };
}
