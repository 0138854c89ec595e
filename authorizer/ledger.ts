// The double-entry ledger. Every transfer moves a positive amount from one
// ledger account to another and writes exactly two entries, -amount and
// +amount, so the ledger as a whole always sums to zero. Riders' accounts
// have a floor (-credit_limit); system accounts carry the other side of
// riders' money (top-up funding, payable to an issuer, paid to an issuer).
import type { Knex } from 'knex';
import { asText, chunks, insertRows, isPostgres, snapshot, sumAsText, toNumber, type Db } from '../common/db.js';
import { apiError } from '../common/errors.js';

export type TransferKind = 'TOP_UP' | 'FARE' | 'SETTLEMENT';
export type LedgerAccountKind = 'RIDER' | 'TOP_UP_FUNDING' | 'ISSUER_PAYABLE' | 'ISSUER_PAID';

/** Ledger account ids: one per rider account, and system accounts per issuer and currency. */
export const ledgerAccountId = {
  rider: (accountId: string) => `rider:${accountId}`,
  topUpFunding: (currency: string) => `top-up-funding:${currency}`,
  issuerPayable: (issuerId: string, currency: string) => `issuer-payable:${issuerId}:${currency}`,
  issuerPaid: (issuerId: string, currency: string) => `issuer-paid:${issuerId}:${currency}`,
};

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

interface LedgerAccountState {
  id: string;
  kind: LedgerAccountKind;
  currency: string;
  balance: bigint;
  /** null: no floor (system account). */
  creditLimit: bigint | null;
  createdAt: number;
  isNew: boolean;
}

export interface TransferInput {
  transferId: string;
  kind: TransferKind;
  /** Ledger account the amount leaves. */
  debitAccountId: string;
  /** Ledger account the amount reaches. */
  creditAccountId: string;
  /** Positive amount in minor units. */
  amount: bigint;
  currency: string;
  /** What the transfer was for: tap id, top-up request id, settlement id. */
  reference: string;
  bookedAt: number;
}

export interface PostedTransfer {
  debitBalanceAfter: bigint;
  creditBalanceAfter: bigint;
}


/**
 * The ledger within one database transaction: load the accounts a batch
 * touches, post any number of transfers in memory (each checked against the
 * payer's floor), then flush them in a few bulk statements. Balances and
 * entries are written in the caller's transaction, so they commit together.
 */
export class LedgerBook {
  private readonly accounts = new Map<string, LedgerAccountState>();
  private readonly touched = new Set<string>();
  private readonly transfers: TransferInput[] = [];
  private readonly entries: Record<string, unknown>[] = [];

  constructor(private readonly trx: Knex.Transaction) {}

  /** Loads ledger accounts (locking them on PostgreSQL, in id order so concurrent batches cannot deadlock). */
  async load(ids: Iterable<string>): Promise<void> {
    const wanted = [...new Set(ids)].filter((id) => !this.accounts.has(id)).sort();
    for (const part of chunks(wanted)) {
      const query = this.trx('ledger_accounts')
        .whereIn('ledger_account_id', part)
        .orderBy('ledger_account_id')
        .select('ledger_account_id', 'kind', 'currency', 'created_at', asText(this.trx, 'balance'), asText(this.trx, 'credit_limit'));
      if (isPostgres(this.trx)) query.forUpdate();
      for (const row of await query) {
        this.accounts.set(row.ledger_account_id, {
          id: row.ledger_account_id,
          kind: row.kind,
          currency: row.currency,
          balance: BigInt(row.balance),
          creditLimit: row.credit_limit === null ? null : BigInt(row.credit_limit),
          createdAt: toNumber(row.created_at),
          isNew: false,
        });
      }
    }
  }

  has(id: string): boolean {
    return this.accounts.has(id);
  }

  /** A system account by id, created (on flush) when it does not exist yet. Call load() for it first. */
  useSystemAccount(id: string, kind: Exclude<LedgerAccountKind, 'RIDER'>, currency: string, now: number): void {
    if (this.accounts.has(id)) return;
    this.accounts.set(id, { id, kind, currency, balance: 0n, creditLimit: null, createdAt: now, isNew: true });
  }

  private account(id: string): LedgerAccountState {
    const account = this.accounts.get(id);
    if (!account) throw new Error(`ledger account ${id} was not loaded`);
    return account;
  }

  balance(id: string): bigint {
    return this.account(id).balance;
  }

  /** What a transfer may take from the account now: balance + credit limit (unbounded for system accounts). */
  available(id: string): bigint | null {
    const a = this.account(id);
    return a.creditLimit === null ? null : a.balance + a.creditLimit;
  }

  /** Books a transfer in memory; refuses one that would take the payer below its floor. */
  post(t: TransferInput): PostedTransfer {
    if (t.amount <= 0n) throw new Error(`transfer ${t.transferId}: amount must be positive`);
    const from = this.account(t.debitAccountId);
    const to = this.account(t.creditAccountId);
    if (from.currency !== t.currency || to.currency !== t.currency) {
      throw new Error(`transfer ${t.transferId}: currency ${t.currency} differs from its accounts' (${from.currency}, ${to.currency})`);
    }
    const fromAfter = from.balance - t.amount;
    const toAfter = to.balance + t.amount;
    if (from.creditLimit !== null && fromAfter + from.creditLimit < 0n) {
      throw apiError('INSUFFICIENT_FUNDS', `${t.debitAccountId} cannot pay ${t.amount}: available ${from.balance + from.creditLimit}`);
    }
    if (fromAfter < INT64_MIN || toAfter > INT64_MAX) {
      throw apiError('BALANCE_OUT_OF_RANGE', `transfer ${t.transferId} would take a balance out of the int64 range`);
    }
    from.balance = fromAfter;
    to.balance = toAfter;
    this.touched.add(from.id).add(to.id);
    this.transfers.push(t);
    const entry = (accountId: string, amount: bigint, balanceAfter: bigint, side: string) => ({
      entry_id: `${t.transferId}.${side}`,
      transfer_id: t.transferId,
      ledger_account_id: accountId,
      kind: t.kind,
      amount: amount.toString(),
      balance_after: balanceAfter.toString(),
      currency: t.currency,
      reference: t.reference,
      booked_at: t.bookedAt,
    });
    this.entries.push(entry(from.id, -t.amount, fromAfter, 'dr'), entry(to.id, t.amount, toAfter, 'cr'));
    return { debitBalanceAfter: fromAfter, creditBalanceAfter: toAfter };
  }

  /** Writes new system accounts, the transfers, their entries and the new balances. */
  async flush(): Promise<void> {
    const created = [...this.accounts.values()].filter((a) => a.isNew && this.touched.has(a.id));
    for (const part of chunks(created)) {
      await this.trx('ledger_accounts').insert(
        part.map((a) => ({ ledger_account_id: a.id, kind: a.kind, currency: a.currency, balance: '0', credit_limit: null, created_at: a.createdAt })),
      );
      for (const a of part) a.isNew = false;
    }
    for (const part of chunks(this.transfers)) {
      await insertRows(
        this.trx,
        'transfers',
        part.map((t) => ({
          transfer_id: t.transferId,
          kind: t.kind,
          debit_account_id: t.debitAccountId,
          credit_account_id: t.creditAccountId,
          amount: t.amount.toString(),
          currency: t.currency,
          reference: t.reference,
          booked_at: t.bookedAt,
        })),
      );
    }
    for (const part of chunks(this.entries)) await insertRows(this.trx, 'ledger_entries', part);
    // One UPDATE per chunk of accounts (a batch of fares touches an account per rider), not one per account.
    for (const part of chunks([...this.touched])) {
      const cases = part.map(() => 'WHEN ? THEN CAST(? AS BIGINT)').join(' ');
      await this.trx('ledger_accounts')
        .whereIn('ledger_account_id', part)
        .update({ balance: this.trx.raw(`CASE ledger_account_id ${cases} END`, part.flatMap((id) => [id, this.account(id).balance.toString()])) });
    }
    this.transfers.length = 0;
    this.entries.length = 0;
    this.touched.clear();
  }
}

export interface LedgerEntryView {
  seq: number;
  entryId: string;
  transferId: string;
  kind: TransferKind;
  amount: bigint;
  balanceAfter: bigint;
  currency: string;
  reference: string;
  bookedAt: Date;
}

/** Entries of one ledger account, newest first, older than beforeSeq when given. */
export async function entriesOf(db: Db, ledgerAccount: string, opts: { limit: number; beforeSeq?: number }): Promise<LedgerEntryView[]> {
  const query = db('ledger_entries')
    .where({ ledger_account_id: ledgerAccount })
    .orderBy('seq', 'desc')
    .limit(opts.limit)
    .select('seq', 'entry_id', 'transfer_id', 'kind', 'currency', 'reference', 'booked_at', asText(db, 'amount'), asText(db, 'balance_after'));
  if (opts.beforeSeq !== undefined) query.where('seq', '<', opts.beforeSeq);
  return (await query).map((r) => ({
    seq: toNumber(r.seq),
    entryId: r.entry_id,
    transferId: r.transfer_id,
    kind: r.kind,
    amount: BigInt(r.amount),
    balanceAfter: BigInt(r.balance_after),
    currency: r.currency,
    reference: r.reference,
    bookedAt: new Date(toNumber(r.booked_at)),
  }));
}

/**
 * Checks the ledger's invariants and returns every violation found (empty
 * when the ledger is sound): each transfer is exactly two entries, -amount
 * and +amount, that sum to zero; all entries sum to zero; each account's
 * balance equals the sum of its entries and its latest balance_after; no
 * account is below its floor. All in one snapshot, so a transfer committing
 * meanwhile is seen whole or not at all.
 */
export function ledgerViolations(db: Db): Promise<string[]> {
  return snapshot(db, violationsIn);
}

async function violationsIn(db: Knex.Transaction): Promise<string[]> {
  const problems: string[] = [];

  const transfers = await db('transfers as t')
    .leftJoin('ledger_entries as e', 'e.transfer_id', 't.transfer_id')
    .groupBy('t.transfer_id', 't.amount', 't.debit_account_id', 't.credit_account_id')
    .select(
      't.transfer_id',
      asText(db, 't.amount', 'amount'),
      db.raw('COUNT(e.seq) AS n'),
      sumAsText(db, 'e.amount', 'total'),
      db.raw('CAST(MIN(e.amount) AS TEXT) AS low'),
      db.raw('CAST(MAX(e.amount) AS TEXT) AS high'),
    );
  for (const t of transfers) {
    const amount = BigInt(t.amount);
    if (toNumber(t.n) !== 2) problems.push(`transfer ${t.transfer_id} has ${t.n} entries, not 2`);
    else if (BigInt(t.total) !== 0n) problems.push(`transfer ${t.transfer_id} sums to ${t.total}, not 0`);
    else if (BigInt(t.low) !== -amount || BigInt(t.high) !== amount) problems.push(`transfer ${t.transfer_id} entries do not move its amount ${amount}`);
  }
  const orphans = await db('ledger_entries as e').leftJoin('transfers as t', 't.transfer_id', 'e.transfer_id').whereNull('t.transfer_id').count({ n: '*' });
  if (toNumber(orphans[0].n) > 0) problems.push(`${orphans[0].n} entries belong to no transfer`);

  const [all] = await db('ledger_entries').select(sumAsText(db, 'amount', 'total'));
  if (BigInt(all.total) !== 0n) problems.push(`all entries sum to ${all.total}, not 0`);

  const sums = new Map<string, bigint>(
    (await db('ledger_entries').groupBy('ledger_account_id').select('ledger_account_id', sumAsText(db, 'amount', 'total'))).map((r) => [
      r.ledger_account_id,
      BigInt(r.total),
    ]),
  );
  const latest = new Map<string, bigint>(
    (
      await db('ledger_entries')
        .whereIn('seq', db('ledger_entries').groupBy('ledger_account_id').max('seq'))
        .select('ledger_account_id', asText(db, 'balance_after'))
    ).map((r) => [r.ledger_account_id, BigInt(r.balance_after)]),
  );
  const accounts = await db('ledger_accounts').select('ledger_account_id', asText(db, 'balance'), asText(db, 'credit_limit'));
  for (const a of accounts) {
    const balance = BigInt(a.balance);
    const sum = sums.get(a.ledger_account_id) ?? 0n;
    if (balance !== sum) problems.push(`${a.ledger_account_id} balance ${balance} differs from the sum of its entries ${sum}`);
    const last = latest.get(a.ledger_account_id);
    if (last !== undefined && last !== balance) problems.push(`${a.ledger_account_id} balance ${balance} differs from its latest balance_after ${last}`);
    if (a.credit_limit !== null && balance + BigInt(a.credit_limit) < 0n) problems.push(`${a.ledger_account_id} balance ${balance} is below its floor -${a.credit_limit}`);
  }
  return problems;
}

/** Throws when the ledger breaks an invariant (see ledgerViolations); for tests and operators. */
export async function assertLedgerBalanced(db: Db): Promise<void> {
  const problems = await ledgerViolations(db);
  if (problems.length > 0) throw new Error(`ledger invariants violated:\n  ${problems.join('\n  ')}`);
}
