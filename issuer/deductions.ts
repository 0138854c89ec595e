// The debit outbox: taps in RECEIVED are sent to the credit authorizer as
// DeductRequest items (request id = tap id) and each outcome is stored. A tap
// is marked DEDUCTING before it is sent, so a crash or a failed call after
// sending is recovered by resending the DEDUCTING taps with the same request
// ids: the authorizer answers a repeat with its first result. Replicas
// sharing the database claim their batches with leases (common/leases.ts),
// so a tap is sent by one replica at a time, and a dead replica's taps are
// taken over once its claims expire.
import { asText, insertRows } from '../common/db.js';
import { isPostgres, Leases } from '../common/leases.js';
import { trailLogger } from '../common/log.js';
import { itemTraceFields, runForBatch } from '../common/trace.js';
import {
  DeductDeclineReason,
  DeductStatus,
  deductDeclineReasonToJSON,
  type DeductItem,
  type DeductResult,
} from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { chunks, DEFAULT_DEBT_RETRY, debtRetryDelay, leasesOf, type IssuerContext } from './context.js';
import { addReason } from './deny-list.js';

export const DEFAULT_DEDUCT_BATCH_SIZE = 1000;

interface PendingTap {
  id: number | string;
  tap_id: string;
  card_id: string;
  /** The fare after the daily cap: what is debited. */
  due_minor: string;
  agreement_id: string;
  fare_currency: string;
  fare_minor: string;
  tapped_at: string;
  state: 'RECEIVED' | 'DEDUCTING';
  traceparent: string | null;
}

/** "DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS" -> "INSUFFICIENT_FUNDS". */
export const declineReasonName = (reason: DeductDeclineReason) =>
  deductDeclineReasonToJSON(reason).replace(/^DEDUCT_DECLINE_REASON_/, '');

/**
 * One step of the outbox worker: sends the oldest batch of undebited taps and
 * stores the outcomes. Resolves true when a full batch was sent (more may be
 * waiting); rejects when the call failed, leaving the taps DEDUCTING.
 */
export async function deductStep(ctx: IssuerContext, batchSize = DEFAULT_DEDUCT_BATCH_SIZE): Promise<boolean> {
  const { db } = ctx;
  const leases = leasesOf(ctx);
  // Claim the batch (other replicas may drain the same outbox) and mark its
  // RECEIVED taps DEDUCTING in one transaction.
  const { claim, pending } = await db.transaction(async (trx) => {
    const claim = await leases.claim(trx, {
      table: 'taps',
      key: 'tap_id',
      candidates: (q) => q.whereIn('state', ['RECEIVED', 'DEDUCTING']).orderBy('id'),
      limit: batchSize,
    });
    const pending: PendingTap[] = [];
    for (const ids of chunks(claim.keys)) {
      pending.push(
        ...(await trx('taps')
          .whereIn('tap_id', ids)
          .select('id', 'tap_id', 'card_id', 'agreement_id', 'fare_currency', asText(trx, 'fare_minor'), asText(trx, 'due_minor'), asText(trx, 'tapped_at'), 'state', 'traceparent')),
      );
    }
    pending.sort((a, b) => Number(a.id) - Number(b.id));
    const received = pending.filter((t) => t.state === 'RECEIVED').map((t) => t.tap_id);
    const now = String(ctx.now().getTime());
    for (const ids of chunks(received)) {
      await trx('taps').whereIn('tap_id', ids).where({ state: 'RECEIVED' }).update({ state: 'DEDUCTING', updated_at: now });
      await insertRows(trx, 'tap_state_changes', ids.map((tap_id) => ({ tap_id, state: 'DEDUCTING', changed_at: now })));
    }
    return { claim, pending };
  });
  if (pending.length === 0) return false;
  try {
    await sendAndStore(ctx, pending);
  } catch (err) {
    // The taps stay DEDUCTING; freed, any replica may resend them now.
    await leases.release(db, 'taps', 'tap_id', claim).catch((e) => ctx.log.warn({ err: String(e) }, 'could not release claimed taps; their claim expires'));
    throw err;
  }
  return claim.keys.length === batchSize;
}

/** Sends the claimed taps as one Deduct call and stores each outcome (which also frees the tap's claim). */
async function sendAndStore(ctx: IssuerContext, pending: PendingTap[]): Promise<void> {
  const { db } = ctx;

  const items: DeductItem[] = pending.map((t) => ({
    requestId: t.tap_id,
    tapId: t.tap_id,
    agreementId: t.agreement_id,
    amount: { currencyCode: t.fare_currency, minorUnits: t.due_minor },
    tappedAt: new Date(Number(t.tapped_at)),
    traceparent: t.traceparent ?? undefined,
  }));
  // The call joins the first tap's trace; every item carries its own.
  const { results } = await runForBatch(pending[0].traceparent ?? undefined, () => ctx.authorizer.deduct({ issuerId: ctx.issuerId, items }));
  checkResults(items, results);

  const now = String(ctx.now().getTime());
  const byId = new Map(pending.map((t) => [t.tap_id, t]));
  let debited = 0;
  let declined = 0;
  let rejected = 0;
  let listed = false;
  const trail = trailLogger(ctx.log);
  await db.transaction(async (trx) => {
    // Debits (nearly every result) are stored in bulk: a few statements per
    // chunk instead of two per tap. Guarded by state as below: only taps
    // still DEDUCTING (locked until commit on PostgreSQL) take the outcome.
    const debits = results.filter((r) => r.status === DeductStatus.DEDUCT_STATUS_DEBITED);
    for (const part of chunks(debits)) {
      const open = trx('taps').whereIn('tap_id', part.map((r) => r.requestId)).where({ state: 'DEDUCTING' });
      if (isPostgres(trx)) open.forUpdate();
      const deducting = new Set((await open.select('tap_id')).map((row: { tap_id: string }) => row.tap_id));
      const ours = part.filter((r) => deducting.has(r.requestId));
      if (ours.length === 0) continue;
      await trx('taps')
        .whereIn('tap_id', ours.map((r) => r.requestId))
        .where({ state: 'DEDUCTING' })
        .update({
          state: 'DEDUCTED',
          deduction_id: trx.raw(`CASE tap_id ${ours.map(() => 'WHEN ? THEN ?').join(' ')} END`, ours.flatMap((r) => [r.requestId, r.deductionId])),
          // What was debited is the amount due, in the fare's currency (the columns of the same row).
          charged_currency: trx.ref('fare_currency'),
          charged_minor: trx.ref('due_minor'),
          ...Leases.free,
          updated_at: now,
        });
      await insertRows(trx, 'tap_state_changes', ours.map((r) => ({ tap_id: r.requestId, state: 'DEDUCTED', changed_at: now })));
    }
    for (const r of results) {
      const tap = byId.get(r.requestId)!;
      let change: Record<string, string | null>;
      if (r.status === DeductStatus.DEDUCT_STATUS_DEBITED) {
        debited++;
        trail.info({ ...itemTraceFields(tap.traceparent ?? undefined), tapId: r.requestId, state: 'DEDUCTED' }, 'tap debit answered');
        continue;
      } else if (r.status === DeductStatus.DEDUCT_STATUS_DECLINED) {
        declined++;
        // A debt: retried on the schedule, and the card is declined at the gates until it is recovered.
        const retryAt = Number(now) + debtRetryDelay(ctx.debtRetry ?? DEFAULT_DEBT_RETRY, 0);
        change = { state: 'DECLINED', decline_reason: declineReasonName(r.declineReason), next_retry_at: String(retryAt) };
      } else {
        rejected++;
        change = { state: 'REJECTED', decline_reason: r.errorReason || 'REJECTED_BY_AUTHORIZER' };
      }
      // Guarded by state: an outcome is stored once, whatever a concurrent sender did.
      const updated = await trx('taps').where({ tap_id: r.requestId, state: 'DEDUCTING' }).update({ ...change, ...Leases.free, updated_at: now });
      if (updated > 0) await trx('tap_state_changes').insert({ tap_id: r.requestId, state: change.state, changed_at: now });
      if (updated > 0 && change.state === 'DECLINED' && (await addReason(trx, tap.card_id, 'DEBT', Number(now)))) listed = true;
      trail.info({ ...itemTraceFields(tap.traceparent ?? undefined), tapId: r.requestId, state: change.state, reason: change.decline_reason ?? undefined }, 'tap debit answered');
    }
  });
  if (listed) ctx.denyListFeed?.notify();
  ctx.log.debug({ sent: items.length, debited, declined, rejected }, 'deduct batch stored');
}

/** Refuses an answer that does not give one well-formed result per item, in order (nothing is stored then). */
export function checkResults(items: DeductItem[], results: DeductResult[]): void {
  if (results.length !== items.length) {
    throw new Error(`Deduct answered ${results.length} results for ${items.length} items`);
  }
  results.forEach((r, i) => {
    if (r.requestId !== items[i].requestId) throw new Error(`Deduct result ${i} is for ${r.requestId}, expected ${items[i].requestId}`);
    if (r.status === DeductStatus.DEDUCT_STATUS_DEBITED && !r.deductionId) throw new Error(`Deduct result ${i} is DEBITED without a deduction id`);
    if (r.status === DeductStatus.DEDUCT_STATUS_DECLINED && r.declineReason === DeductDeclineReason.DEDUCT_DECLINE_REASON_UNSPECIFIED) {
      throw new Error(`Deduct result ${i} is DECLINED without a reason`);
    }
    if (![DeductStatus.DEDUCT_STATUS_DEBITED, DeductStatus.DEDUCT_STATUS_DECLINED, DeductStatus.DEDUCT_STATUS_REJECTED].includes(r.status)) {
      throw new Error(`Deduct result ${i} has status ${r.status}`);
    }
  });
}
