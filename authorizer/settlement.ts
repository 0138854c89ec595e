// Settlement outbox. Debited fares are owed to their issuer until settled.
// A settlement batch is formed in one transaction that assigns the
// deductions to it, so its id and items are fixed from then on: it is sent
// (and re-sent after any failure) unchanged until the issuer acknowledges it.
// On acknowledgement the matched total moves from "payable to issuer" to
// "paid to issuer" and the issuer's per-item answer is stored; mismatched
// items stay payable for an operator to resolve. Replicas sharing the
// database each claim a settlement (a lease, common/leases.ts) before
// sending it, so one is in flight from one replica at a time and a dead
// replica's settlement is taken over when its claim expires.
import type { Knex } from 'knex';
import { asText, chunks, retryOnUniqueViolation, sumAsText, toNumber, type Db } from '../common/db.js';
import { newId } from '../common/ids.js';
import { Leases, skipLocked, type Claim } from '../common/leases.js';
import type { Logger } from '../common/log.js';
import { LedgerBook, ledgerAccountId } from './ledger.js';

export const DEFAULT_SETTLEMENT_BATCH_SIZE = 1000;

export interface SettlementItem {
  deductionId: string;
  /** The deduction's request id. */
  tapId: string;
  amount: bigint;
}

export interface SettlementBatch {
  settlementId: string;
  issuerId: string;
  currency: string;
  total: bigint;
  items: SettlementItem[];
}

export interface SettlementItemAck {
  tapId: string;
  matched: boolean;
  /** The issuer's reason for a mismatch. */
  reason: string;
}

/** The issuer's answer to a settlement: one result per item, in order. */
export interface SettlementAck {
  results: SettlementItemAck[];
  /** The matched total the issuer reported, to cross-check ours. */
  matchedTotal?: bigint;
}

/** Sends a settlement to its issuer; rejects when it was not acknowledged. */
export type SendSettlement = (batch: SettlementBatch) => Promise<SettlementAck>;

/** Issuers with a settlement waiting to be acknowledged or debited fares not yet in a settlement. */
export async function issuersToSettle(db: Db): Promise<string[]> {
  const pending = await db('settlements').where({ state: 'PENDING' }).distinct('issuer_id');
  const unsettled = await db('deductions').where({ status: 'DEBITED' }).whereNull('settlement_id').distinct('issuer_id');
  return [...new Set([...pending, ...unsettled].map((r) => r.issuer_id as string))].sort();
}

async function loadBatch(db: Db, settlementId: string): Promise<SettlementBatch> {
  const s = await db('settlements').where({ settlement_id: settlementId }).first('settlement_id', 'issuer_id', 'currency', asText(db, 'total'));
  const items = await db('deductions')
    .where({ settlement_id: settlementId })
    .orderBy('seq')
    .select('deduction_id', 'request_id', 'tap_id', asText(db, 'amount'));
  return {
    settlementId: s.settlement_id,
    issuerId: s.issuer_id,
    currency: s.currency,
    total: BigInt(s.total),
    items: items.map((i) => ({ deductionId: i.deduction_id, tapId: i.tap_id ?? i.request_id, amount: BigInt(i.amount) })),
  };
}

/**
 * Forms a new settlement of up to batchSize unsettled debits of the issuer in
 * one currency, oldest first, in trx; resolves its id, or undefined when
 * nothing is left to settle. Safe beside another replica forming one at the
 * same time: on PostgreSQL the debits are selected FOR UPDATE SKIP LOCKED
 * (the other's are left out), each is assigned only while it has no
 * settlement, and the total is summed from what was actually assigned, so no
 * debit lands in two settlements and no settlement is empty.
 */
async function formSettlement(trx: Knex.Transaction, issuerId: string, batchSize: number, now: number, claim?: Omit<Claim, 'keys'>): Promise<string | undefined> {
  const unsettled = () => trx('deductions').where({ issuer_id: issuerId, status: 'DEBITED' }).whereNull('settlement_id');
  const oldest = await unsettled().orderBy('seq').first('currency');
  if (!oldest) return undefined;
  const rows = await skipLocked(trx, unsettled().where({ currency: oldest.currency }).orderBy('seq').limit(batchSize).select('seq'));
  if (rows.length === 0) return undefined;
  const settlementId = newId('stl');
  await trx('settlements').insert({
    settlement_id: settlementId,
    issuer_id: issuerId,
    currency: oldest.currency,
    total: '0',
    item_count: 0,
    state: 'PENDING',
    created_at: now,
    ...(claim ? Leases.columns(claim) : {}),
  });
  for (const part of chunks(rows.map((r) => toNumber(r.seq)))) {
    await trx('deductions').whereIn('seq', part).whereNull('settlement_id').update({ settlement_id: settlementId });
  }
  const [assigned] = await trx('deductions').where({ settlement_id: settlementId }).select(trx.raw('COUNT(*) AS n'), sumAsText(trx, 'amount', 'total'));
  if (toNumber(assigned.n) === 0) {
    await trx('settlements').where({ settlement_id: settlementId }).delete();
    return undefined;
  }
  await trx('settlements').where({ settlement_id: settlementId }).update({ total: assigned.total, item_count: toNumber(assigned.n) });
  return settlementId;
}

/**
 * The issuer's next settlement to send: its oldest unacknowledged one if any
 * (sent again unchanged), else a new batch of up to batchSize unsettled
 * debits in one currency, oldest first; undefined when nothing is owed.
 * Ignores claims: the worker uses claimSettlement.
 */
export async function nextSettlement(db: Db, issuerId: string, batchSize = DEFAULT_SETTLEMENT_BATCH_SIZE, now = Date.now()): Promise<SettlementBatch | undefined> {
  return db.transaction(async (trx) => {
    const pending = await trx('settlements').where({ issuer_id: issuerId, state: 'PENDING' }).orderBy(['created_at', 'settlement_id']).first('settlement_id');
    const settlementId = pending?.settlement_id ?? (await formSettlement(trx, issuerId, batchSize, now));
    return settlementId ? loadBatch(trx, settlementId) : undefined;
  });
}

/**
 * Like nextSettlement, for one replica among several: claims the issuer's
 * oldest unacknowledged settlement that no other replica holds, else forms a
 * new one held by this replica. The claim ends with the acknowledgement, or
 * with release() after a failed send, or expires when the replica dies.
 */
export async function claimSettlement(
  db: Db,
  leases: Leases,
  issuerId: string,
  batchSize = DEFAULT_SETTLEMENT_BATCH_SIZE,
  now = Date.now(),
): Promise<{ batch: SettlementBatch; claim: Claim } | undefined> {
  return db.transaction(async (trx) => {
    const held = await leases.claim(trx, {
      table: 'settlements',
      key: 'settlement_id',
      candidates: (q) => q.where({ issuer_id: issuerId, state: 'PENDING' }).orderBy(['created_at', 'settlement_id']),
      limit: 1,
    });
    if (held.keys.length > 0) return { batch: await loadBatch(trx, held.keys[0]), claim: held };
    const formed = await formSettlement(trx, issuerId, batchSize, now, held);
    return formed ? { batch: await loadBatch(trx, formed), claim: { ...held, keys: [formed] } } : undefined;
  });
}

export interface AcknowledgedSettlement {
  settlementId: string;
  matchedTotal: bigint;
  mismatched: (SettlementItemAck & { deductionId: string; amount: bigint })[];
  /** False when the settlement had been acknowledged already (nothing booked again). */
  booked: boolean;
}

/**
 * Records the issuer's acknowledgement: stores each item's answer, books the
 * matched total as a SETTLEMENT transfer (payable -> paid) and closes the
 * settlement, all in one transaction. An answer that does not line up with
 * the items is refused (the settlement stays pending).
 */
export async function acknowledgeSettlement(db: Db, settlementId: string, ack: SettlementAck, now = Date.now()): Promise<AcknowledgedSettlement> {
  // A replica acknowledging another settlement may create the issuer's "paid" account first: run again, it exists then.
  return retryOnUniqueViolation(() =>
    db.transaction(async (trx) => {
      // Claims the acknowledgement first (the row's lock on PostgreSQL): a
      // concurrent acknowledgement of the same settlement (two replicas, one
      // after a takeover) waits here, then finds it acknowledged and books nothing.
      const won = await trx('settlements').where({ settlement_id: settlementId, state: 'PENDING' }).update({ state: 'ACKNOWLEDGED' });
      if (won === 0) {
        const s = await trx('settlements').where({ settlement_id: settlementId }).first('state', asText(trx, 'matched_total'));
        if (!s) throw new Error(`settlement ${settlementId} does not exist`);
        return { settlementId, matchedTotal: BigInt(s.matched_total), mismatched: [], booked: false };
      }

      const batch = await loadBatch(trx, settlementId);
      if (ack.results.length !== batch.items.length) {
        throw new Error(`issuer answered ${ack.results.length} results for the ${batch.items.length} items of settlement ${settlementId}`);
      }
      ack.results.forEach((r, i) => {
        if (r.tapId !== batch.items[i].tapId) throw new Error(`issuer answered item ${i} of settlement ${settlementId} for tap ${r.tapId}, not ${batch.items[i].tapId}`);
      });

      let matchedTotal = 0n;
      const matched: string[] = [];
      const mismatched: AcknowledgedSettlement['mismatched'] = [];
      batch.items.forEach((item, i) => {
        const r = ack.results[i];
        if (r.matched) {
          matched.push(item.deductionId);
          matchedTotal += item.amount;
        } else mismatched.push({ ...r, deductionId: item.deductionId, amount: item.amount });
      });

      for (const part of chunks(matched)) {
        // By deduction id: a retried debt's request id is not its tap id.
        await trx('deductions').where({ settlement_id: settlementId }).whereIn('deduction_id', part).update({ settlement_status: 'MATCHED', settlement_reason: null });
      }
      for (const m of mismatched) {
        await trx('deductions').where({ settlement_id: settlementId, deduction_id: m.deductionId }).update({ settlement_status: 'MISMATCHED', settlement_reason: m.reason || 'UNSPECIFIED' });
      }

      let transferId: string | null = null;
      if (matchedTotal > 0n) {
        const payable = ledgerAccountId.issuerPayable(batch.issuerId, batch.currency);
        const paid = ledgerAccountId.issuerPaid(batch.issuerId, batch.currency);
        const book = new LedgerBook(trx);
        await book.load([payable, paid]);
        book.useSystemAccount(paid, 'ISSUER_PAID', batch.currency, now);
        transferId = newId('pay');
        book.post({
          transferId,
          kind: 'SETTLEMENT',
          debitAccountId: payable,
          creditAccountId: paid,
          amount: matchedTotal,
          currency: batch.currency,
          reference: settlementId,
          bookedAt: now,
        });
        await book.flush();
      }
      await trx('settlements').where({ settlement_id: settlementId }).update({
        state: 'ACKNOWLEDGED',
        matched_total: matchedTotal.toString(),
        mismatched_count: mismatched.length,
        transfer_id: transferId,
        acknowledged_at: now,
        attempts: trx.raw('attempts + 1'),
        last_error: null,
        ...Leases.free,
      });
      return { settlementId, matchedTotal, mismatched, booked: true };
    }),
  );
}

/** Notes a failed send on the settlement, for operators. */
export async function recordSettlementFailure(db: Db, settlementId: string, error: string): Promise<void> {
  await db('settlements').where({ settlement_id: settlementId }).update({ attempts: db.raw('attempts + 1'), last_error: error.slice(0, 500) });
}

export interface SettlementView {
  settlementId: string;
  issuerId: string;
  currency: string;
  total: bigint;
  itemCount: number;
  state: 'PENDING' | 'ACKNOWLEDGED';
  attempts: number;
  lastError: string | null;
  matchedTotal: bigint | null;
  mismatchedCount: number | null;
}

export async function listSettlements(db: Db): Promise<SettlementView[]> {
  const rows = await db('settlements')
    .orderBy(['created_at', 'settlement_id'])
    .select('settlement_id', 'issuer_id', 'currency', 'item_count', 'state', 'attempts', 'last_error', 'mismatched_count', asText(db, 'total'), asText(db, 'matched_total'));
  return rows.map((r) => ({
    settlementId: r.settlement_id,
    issuerId: r.issuer_id,
    currency: r.currency,
    total: BigInt(r.total),
    itemCount: toNumber(r.item_count),
    state: r.state,
    attempts: toNumber(r.attempts),
    lastError: r.last_error,
    matchedTotal: r.matched_total === null ? null : BigInt(r.matched_total),
    mismatchedCount: r.mismatched_count === null ? null : toNumber(r.mismatched_count),
  }));
}

/**
 * One step of the settlement worker: for each issuer, send its next
 * settlement and record the acknowledgement. Issuers are independent: one
 * issuer being down does not hold back another's settlements. Resolves true
 * when more may be waiting; rejects (so the worker backs off) when any send
 * failed, after trying every issuer.
 */
export function settlementStep(opts: { db: Db; send: SendSettlement; batchSize?: number; log: Logger; leases?: Leases }): () => Promise<boolean> {
  const { db, send, log } = opts;
  const leases = opts.leases ?? new Leases();
  return async () => {
    let more = false;
    const failed: string[] = [];
    for (const issuerId of await issuersToSettle(db)) {
      const claimed = await claimSettlement(db, leases, issuerId, opts.batchSize);
      if (!claimed) continue;
      const { batch, claim } = claimed;
      let ack: SettlementAck;
      try {
        ack = await send(batch);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        await recordSettlementFailure(db, batch.settlementId, error);
        // Freed, the settlement is sent again unchanged by whichever replica claims it next.
        await leases.release(db, 'settlements', 'settlement_id', claim);
        log.warn({ settlementId: batch.settlementId, issuerId, error }, 'settlement not acknowledged; will retry');
        failed.push(issuerId);
        continue;
      }
      const done = await acknowledgeSettlement(db, batch.settlementId, ack).catch(async (err) => {
        await leases.release(db, 'settlements', 'settlement_id', claim);
        throw err;
      });
      if (ack.matchedTotal !== undefined && ack.matchedTotal !== done.matchedTotal) {
        log.warn({ settlementId: batch.settlementId, issuerId, ours: String(done.matchedTotal), theirs: String(ack.matchedTotal) }, 'issuer reported another matched total');
      }
      if (done.mismatched.length > 0) {
        log.warn(
          {
            settlementId: batch.settlementId,
            issuerId,
            mismatchedCount: done.mismatched.length,
            mismatched: done.mismatched.slice(0, 20).map((m) => ({ tapId: m.tapId, deductionId: m.deductionId, amount: String(m.amount), reason: m.reason })),
          },
          'settlement items mismatched; they stay payable',
        );
      }
      log.info({ settlementId: batch.settlementId, issuerId, items: batch.items.length, matchedTotal: String(done.matchedTotal) }, 'settled');
      more = true; // this issuer may have more; the next step finds out
    }
    if (failed.length > 0) throw new Error(`settlement not acknowledged by ${failed.join(', ')}`);
    return more;
  };
}
