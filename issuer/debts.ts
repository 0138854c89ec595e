// Debt recovery. A declined debit leaves its tap DECLINED (a debt) and lists
// the card DEBT. The debt is retried on a schedule (backoff doubling per
// retry) and when the rider asks (RetryDebts, e.g. after a top-up). Each
// retry is a new debit at the authorizer: the authorizer keeps the declined
// answer of a request id for good, so attempt n uses request id
// "<tap id>:r<n>" and names the tap in tap_id. The attempt is stored PENDING
// before it is sent (the outbox), so a crash resends the same request id,
// and the authorizer debits a tap at most once whatever the request id. A
// recovered debt turns the tap DEDUCTED (recovered); once a card owes
// nothing, its DEBT listing is removed.
import { createHash } from 'node:crypto';
import { asText, chunks, retryOnUniqueViolation, sumAsText, type Db } from '../common/db.js';
import { apiError } from '../common/errors.js';
import { Leases, skipLocked, type Claim } from '../common/leases.js';
import { trailLogger } from '../common/log.js';
import { itemTraceFields, runForBatch } from '../common/trace.js';
import { MAX_BATCH, Violations } from '../common/validate.js';
import { DeductStatus, type DeductItem } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import type { RetryDebtsRequest, RetryDebtsResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import { checkResults, declineReasonName } from './authorizer-client.js';
import { leasesOf, type IssuerContext } from './context.js';
import { denyListEntry, removeReason } from './deny-list.js';
import { DEBT_STATES, moveTaps } from './tap-states.js';

export const DEFAULT_DEBT_BATCH_SIZE = 500;

/** Backoff of debt retries: baseMs after the first decline, doubling per retry, at most maxMs. */
export interface DebtRetryConfig {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_DEBT_RETRY: DebtRetryConfig = { baseMs: 60 * 60_000, maxMs: 24 * 60 * 60_000 };

/** Wait before the next retry of a debt that has been retried `retries` times. */
export function debtRetryDelay(cfg: DebtRetryConfig, retries: number): number {
  return Math.min(cfg.maxMs, cfg.baseMs * 2 ** Math.min(retries, 30));
}

/** Authorizer request id of retry n (n >= 1) of a tap's debit; the first debit used the tap id itself. */
export function retryRequestId(tapId: string, n: number): string {
  const id = `${tapId}:r${n}`;
  // Ids are at most 64 characters: a long tap id is replaced by its digest (the tap travels in tap_id).
  return id.length <= 64 ? id : `r${n}:${createHash('sha256').update(tapId).digest('hex').slice(0, 48)}`;
}

interface Attempt {
  request_id: string;
  tap_id: string;
  attempt: number;
  card_id: string;
  agreement_id: string;
  fare_currency: string;
  due_minor: string;
  tapped_at: string;
  /** The tap's trace: a retry is followed in the logs under the tap's own trace id. */
  traceparent: string | null;
}

export interface DebtStepResult {
  retried: number;
  recovered: number;
  /** A full batch was due: more may be waiting. */
  more: boolean;
}

const attemptColumns = (db: Db) => [
  'a.request_id',
  'a.tap_id',
  'a.attempt',
  't.card_id',
  't.agreement_id',
  't.fare_currency',
  asText(db, 't.due_minor'),
  asText(db, 't.tapped_at'),
  't.traceparent',
];

/**
 * Claims attempts to send: those a crash or a failed call left PENDING (and
 * no live claim of another replica holds), then a new attempt for each due
 * debt (every debt of cardId when given, whatever its schedule), inserted
 * already claimed. One transaction; a concurrent claimer of the same attempt
 * number fails on the (tap_id, attempt) key.
 */
async function claimAttempts(db: Db, leases: Leases, now: number, batchSize: number, cardId?: string): Promise<{ claim: Claim; attempts: Attempt[] }> {
  return db.transaction(async (trx) => {
    const held = await leases.claim(trx, {
      table: 'debit_attempts',
      key: 'request_id',
      candidates: (q) => {
        q.where({ state: 'PENDING' }).orderBy(['created_at', 'request_id']);
        return cardId ? q.whereIn('tap_id', trx('taps').where({ card_id: cardId }).select('tap_id')) : q;
      },
      limit: batchSize,
    });
    const pending: Attempt[] = [];
    for (const ids of chunks(held.keys)) {
      pending.push(...(await trx('debit_attempts as a').join('taps as t', 't.tap_id', 'a.tap_id').whereIn('a.request_id', ids).select(attemptColumns(trx))));
    }
    const order = new Map(held.keys.map((k, i) => [k, i]));
    pending.sort((x, y) => order.get(x.request_id)! - order.get(y.request_id)!);
    const room = batchSize - pending.length;
    if (room <= 0) return { claim: held, attempts: pending };

    // Taps another replica is claiming right now are skipped (PostgreSQL); the key above catches the rest.
    // The schedule retries DECLINED debts; a retry the rider asks for also tries the UNCOLLECTABLE ones again.
    const dueQuery = trx('taps')
      .whereIn('state', cardId ? DEBT_STATES : ['DECLINED'])
      .whereNotExists(trx('debit_attempts').whereRaw('debit_attempts.tap_id = taps.tap_id').where('debit_attempts.state', 'PENDING'))
      .orderBy('id')
      .limit(room);
    if (cardId) dueQuery.where({ card_id: cardId });
    else dueQuery.where('next_retry_at', '<=', String(now));
    const due = await skipLocked(trx, dueQuery.select('tap_id', 'card_id', 'agreement_id', 'fare_currency', asText(trx, 'due_minor'), asText(trx, 'tapped_at'), 'traceparent', 'debt_retries'));

    const claimed: Attempt[] = due.map((t: any) => {
      const attempt = Number(t.debt_retries) + 1;
      return { ...t, attempt, request_id: retryRequestId(t.tap_id, attempt) };
    });
    for (const part of chunks(claimed)) {
      await trx('debit_attempts').insert(
        part.map((a) => ({ request_id: a.request_id, tap_id: a.tap_id, attempt: a.attempt, state: 'PENDING', created_at: String(now), ...Leases.columns(held) })),
      );
    }
    for (const a of claimed) await trx('taps').where({ tap_id: a.tap_id }).update({ debt_retries: a.attempt, updated_at: String(now) });
    return { claim: { ...held, keys: [...held.keys, ...claimed.map((a) => a.request_id)] }, attempts: [...pending, ...claimed] };
  });
}

/**
 * The agreement a debt is collected under: the card's current binding when it
 * is enrolled (after a re-enrollment that is the new agreement), else the
 * agreement the tap was taken under.
 */
async function collectingAgreements(db: Db, cardIds: string[]): Promise<Map<string, string>> {
  const current = new Map<string, string>();
  for (const ids of chunks(cardIds)) {
    const rows = await db('cards as c')
      .join('enrollments as e', 'e.request_id', 'c.enrollment_request_id')
      .whereIn('c.card_id', ids)
      .where('c.state', 'ENROLLED')
      .select('c.card_id', 'e.agreement_id');
    for (const r of rows) current.set(r.card_id, r.agreement_id);
  }
  return current;
}

/**
 * One step of the debt worker: sends the claimed attempts in one Deduct call
 * and stores the answers. Rejects when the call fails (the attempts stay
 * PENDING and are resent with the same request ids).
 */
export async function debtStep(ctx: IssuerContext, opts: { cardId?: string; batchSize?: number } = {}): Promise<DebtStepResult> {
  const { db } = ctx;
  const batchSize = opts.batchSize ?? DEFAULT_DEBT_BATCH_SIZE;
  const leases = leasesOf(ctx);
  // A concurrent claimer may take the same attempt number first: claim again, it is PENDING then.
  const { claim, attempts } = await retryOnUniqueViolation(() => claimAttempts(db, leases, ctx.now().getTime(), batchSize, opts.cardId));
  if (attempts.length === 0) return { retried: 0, recovered: 0, more: false };
  try {
    return await sendAttempts(ctx, attempts, batchSize, opts.cardId);
  } catch (err) {
    // The attempts stay PENDING; freed, any replica may resend them now.
    await leases.release(db, 'debit_attempts', 'request_id', claim).catch((e) => ctx.log.warn({ err: String(e) }, 'could not release claimed debt attempts; their claim expires'));
    throw err;
  }
}

/** Sends the claimed attempts in one Deduct call and stores the answers (which also frees their claims). */
async function sendAttempts(ctx: IssuerContext, attempts: Attempt[], batchSize: number, forCard: string | undefined): Promise<DebtStepResult> {
  const { db } = ctx;

  const agreements = await collectingAgreements(db, [...new Set(attempts.map((a) => a.card_id))]);
  const items: DeductItem[] = attempts.map((a) => ({
    requestId: a.request_id,
    tapId: a.tap_id,
    agreementId: agreements.get(a.card_id) ?? a.agreement_id,
    amount: { currencyCode: a.fare_currency, minorUnits: a.due_minor },
    tappedAt: new Date(Number(a.tapped_at)),
    traceparent: a.traceparent ?? undefined,
  }));
  const send = () => ctx.authorizer.deduct({ issuerId: ctx.issuerId, items });
  // The scheduled worker's call joins the first tap's trace; a rider's RetryDebts call stays in its own.
  const { results } = await (forCard === undefined ? runForBatch(attempts[0].traceparent ?? undefined, send) : send());
  checkResults(items, results);

  const retry = ctx.debtRetry ?? DEFAULT_DEBT_RETRY;
  const now = ctx.now().getTime();
  const byRequest = new Map(attempts.map((a) => [a.request_id, a]));
  let recovered = 0;
  let unlisted = false;
  const trail = trailLogger(ctx.log);
  await db.transaction(async (trx) => {
    const recoveredCards = new Set<string>();
    for (const r of results) {
      const a = byRequest.get(r.requestId)!;
      const outcome =
        r.status === DeductStatus.DEDUCT_STATUS_DEBITED
          ? { state: 'DEBITED', reason: null, deduction_id: r.deductionId }
          : r.status === DeductStatus.DEDUCT_STATUS_DECLINED
            ? { state: 'DECLINED', reason: declineReasonName(r.declineReason), deduction_id: null }
            : { state: 'REJECTED', reason: r.errorReason || 'REJECTED_BY_AUTHORIZER', deduction_id: null };
      // Guarded by state: an answer is stored once, whatever a concurrent sender did.
      const stored = await trx('debit_attempts').where({ request_id: a.request_id, state: 'PENDING' }).update({ ...outcome, ...Leases.free, answered_at: String(now) });
      if (stored === 0) continue;
      trail.info(
        { ...itemTraceFields(a.traceparent ?? undefined), tapId: a.tap_id, requestId: a.request_id, attempt: a.attempt, state: outcome.state, reason: outcome.reason ?? undefined },
        'tap debt retry answered',
      );
      if (outcome.state === 'DEBITED') {
        const moved = await moveTaps(trx, {
          from: DEBT_STATES,
          to: 'DEDUCTED',
          tapIds: [a.tap_id],
          now,
          set: { deduction_id: r.deductionId, charged_currency: a.fare_currency, charged_minor: a.due_minor, recovered_at: String(now), next_retry_at: null },
        });
        if (moved.length > 0) {
          recovered++;
          recoveredCards.add(a.card_id);
        }
      } else if (outcome.state === 'REJECTED') {
        // Refused for good (the agreement is gone, say): retrying on the schedule cannot help, so the debt waits for an operator or the rider.
        ctx.log.error({ tapId: a.tap_id, requestId: a.request_id, reason: outcome.reason }, 'debt retry refused by the authorizer; the debt is uncollectable');
        const moved = await moveTaps(trx, { from: 'DECLINED', to: 'UNCOLLECTABLE', tapIds: [a.tap_id], now, set: { decline_reason: outcome.reason, next_retry_at: null } });
        // Refused again while already uncollectable: only the reason changes.
        if (moved.length === 0) await trx('taps').where({ tap_id: a.tap_id, state: 'UNCOLLECTABLE' }).update({ decline_reason: outcome.reason, updated_at: String(now) });
      } else {
        // Declined, not refused: an uncollectable debt is collectable again (the card was bound to a new account, say).
        await moveTaps(trx, { from: 'UNCOLLECTABLE', to: 'DECLINED', tapIds: [a.tap_id], now });
        await trx('taps')
          .where({ tap_id: a.tap_id })
          .whereIn('state', DEBT_STATES)
          .update({ decline_reason: outcome.reason!, next_retry_at: String(now + debtRetryDelay(retry, a.attempt)), updated_at: String(now) });
      }
    }
    // A card that owes nothing any more leaves the deny list (for DEBT; other reasons stay).
    for (const cardId of recoveredCards) {
      const owing = await trx('taps').where({ card_id: cardId }).whereIn('state', DEBT_STATES).first('tap_id');
      if (!owing && (await removeReason(trx, cardId, 'DEBT', now))) unlisted = true;
    }
  });
  if (unlisted) ctx.denyListFeed?.notify();
  ctx.log.info({ retried: attempts.length, recovered, cardId: forCard }, 'debts retried');
  return { retried: attempts.length, recovered, more: attempts.length === batchSize };
}

/** Sum of the amounts due of a card's debts. */
export async function outstandingDebt(db: Db, cardId: string): Promise<bigint> {
  const [row] = await db('taps').where({ card_id: cardId }).whereIn('state', DEBT_STATES).select(sumAsText(db, 'due_minor', 'total'));
  return BigInt(row.total);
}

/** RetryDebts: every debt of the card is retried now, once. */
export async function retryDebts(ctx: IssuerContext, req: RetryDebtsRequest): Promise<RetryDebtsResponse> {
  const v = new Violations();
  v.id('card_id', req.cardId);
  v.throwIfAny();
  if (!(await ctx.db('cards').where({ card_id: req.cardId }).first('card_id'))) {
    throw apiError('CARD_NOT_FOUND', `card ${req.cardId} is not known to this issuer`, { card_id: req.cardId });
  }
  // One Deduct call: a card is blocked at its first debt, so it never owes more than a few taps.
  const { retried, recovered } = await debtStep(ctx, { cardId: req.cardId, batchSize: MAX_BATCH });
  return {
    retriedCount: retried,
    recoveredCount: recovered,
    outstandingDebt: { currencyCode: ctx.currencyCode, minorUnits: (await outstandingDebt(ctx.db, req.cardId)).toString() },
    denyListEntry: await denyListEntry(ctx.db, req.cardId),
  };
}
