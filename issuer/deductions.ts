// The debit outbox: taps in RECEIVED are sent to the credit authorizer as
// DeductRequest items (request id = tap id) and each outcome is stored. A tap
// is marked DEDUCTING before it is sent, so a crash or a failed call after
// sending is recovered by resending the DEDUCTING taps with the same request
// ids: the authorizer answers a repeat with its first result. Replicas
// sharing the database claim their batches with leases (common/leases.ts),
// so a tap is sent by one replica at a time, and a dead replica's taps are
// taken over once its claims expire.
import { asText, chunks, type Db } from '../common/db.js';
import { Leases } from '../common/leases.js';
import { trailLogger } from '../common/log.js';
import { itemTraceFields, runForBatch } from '../common/trace.js';
import { DeductStatus, type DeductItem, type DeductResult } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { checkResults, declineReasonName } from './authorizer-client.js';
import { leasesOf, type IssuerContext } from './context.js';
import { DEFAULT_DEBT_RETRY, debtRetryDelay } from './debts.js';
import { addReason } from './deny-list.js';
import { moveTaps } from './tap-states.js';

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
    await moveTaps(trx, { from: 'RECEIVED', to: 'DEDUCTING', tapIds: received, now: ctx.now().getTime() });
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

  const now = ctx.now().getTime();
  const byId = new Map(pending.map((t) => [t.tap_id, t]));
  const trail = trailLogger(ctx.log);
  const of = (status: DeductStatus) => results.filter((r) => r.status === status);
  // Each outcome, the state it moves its taps to and what it stores with them.
  const outcomes = [
    {
      to: 'DEDUCTED' as const,
      results: of(DeductStatus.DEDUCT_STATUS_DEBITED),
      reason: (): string | undefined => undefined,
      // What was debited is the amount due, in the fare's currency (the columns of the same row).
      set: (trx: Db) => ({ charged_currency: trx.ref('fare_currency'), charged_minor: trx.ref('due_minor') }),
    },
    {
      // A debt: retried on the schedule, and the card is declined at the gates until it is recovered.
      to: 'DECLINED' as const,
      results: of(DeductStatus.DEDUCT_STATUS_DECLINED),
      reason: (r: DeductResult) => declineReasonName(r.declineReason),
      set: () => ({ next_retry_at: String(now + debtRetryDelay(ctx.debtRetry ?? DEFAULT_DEBT_RETRY, 0)) }),
    },
    {
      to: 'REJECTED' as const,
      results: of(DeductStatus.DEDUCT_STATUS_REJECTED),
      reason: (r: DeductResult) => r.errorReason || 'REJECTED_BY_AUTHORIZER',
      set: () => ({}),
    },
  ];
  const moved = new Map<string, string[]>();
  let listed = false;
  await db.transaction(async (trx) => {
    // Each outcome moves only taps still DEDUCTING: an answer another sender
    // (a replica, an earlier attempt) already stored is neither stored nor counted again.
    for (const o of outcomes) {
      moved.set(
        o.to,
        await moveTaps(trx, {
          from: 'DEDUCTING',
          to: o.to,
          tapIds: o.results.map((r) => r.requestId),
          now,
          set: { ...o.set(trx), ...Leases.free },
          // A debit stores its deduction id; a decline or a refusal its reason.
          perTap: new Map(o.results.map((r): [string, Record<string, string>] => [r.requestId, o.to === 'DEDUCTED' ? { deduction_id: r.deductionId } : { decline_reason: o.reason(r)! }])),
        }),
      );
    }
    for (const cardId of new Set(moved.get('DECLINED')!.map((tapId) => byId.get(tapId)!.card_id))) {
      if (await addReason(trx, cardId, 'DEBT', now)) listed = true;
    }
  });
  if (listed) ctx.denyListFeed?.notify();
  const answers = new Map(results.map((r) => [r.requestId, r]));
  for (const o of outcomes) {
    for (const tapId of moved.get(o.to)!) {
      trail.info({ ...itemTraceFields(byId.get(tapId)!.traceparent ?? undefined), tapId, state: o.to, reason: o.reason(answers.get(tapId)!) }, 'tap debit answered');
    }
  }
  const count = (state: string) => moved.get(state)!.length;
  ctx.log.debug({ sent: items.length, debited: count('DEDUCTED'), declined: count('DECLINED'), rejected: count('REJECTED') }, 'deduct batch stored');
}

