// Settle: the credit authorizer pays out debited fares in batches. Every item
// is reconciled against the issuer's own tap; a matching tap becomes SETTLED,
// anything else is stored and reported as a mismatch, never accepted silently.
import { asText, chunks, insertRows, isUniqueViolation, type Db } from '../common/db.js';
import { apiError, invalidArgument, requestIdReused } from '../common/errors.js';
import { fingerprint } from '../common/ids.js';
import { Violations } from '../common/validate.js';
import {
  SettleRequest,
  SettlementItemStatus,
  type SettleResponse,
  type SettlementItemResult,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import type { IssuerContext } from './context.js';
import { DEBT_STATES, moveTaps, type TapStateName } from './tap-states.js';

export type MismatchReason = 'UNKNOWN_TAP' | 'TAP_NOT_DEDUCTED' | 'DEDUCTION_ID_MISMATCH' | 'AMOUNT_MISMATCH' | 'ALREADY_SETTLED';

export function validateSettle(req: SettleRequest): void {
  const v = new Violations();
  v.id('settlement_id', req.settlementId);
  v.id('authorizer_id', req.authorizerId);
  v.batch('items', req.items);
  const firstIndex = new Map<string, number>();
  const amounts: (bigint | undefined)[] = req.items.map((item, i) => {
    const f = `items[${i}]`;
    v.id(`${f}.deduction_id`, item.deductionId);
    if (v.id(`${f}.tap_id`, item.tapId)) {
      const earlier = firstIndex.get(item.tapId);
      if (earlier !== undefined) v.add(`${f}.tap_id`, `duplicates items[${earlier}].tap_id`);
      else firstIndex.set(item.tapId, i);
    }
    return v.money(`${f}.amount`, item.amount, { positive: true });
  });
  const total = v.money('total', req.total, { nonNegative: true });
  v.throwIfAny();
  // Only a well-formed batch gets here: now its total must add up, to the unit and in one currency.
  const sum = amounts.reduce<bigint>((s, a) => s + a!, 0n);
  const currencies = new Set(req.items.map((item) => item.amount!.currencyCode));
  if (sum !== total || currencies.size !== 1 || !currencies.has(req.total!.currencyCode)) {
    throw invalidArgument(
      [{ field: 'total', description: `must equal the sum of the items (${sum} in ${[...currencies].join(', ')})` }],
      'TOTAL_MISMATCH',
    );
  }
}

interface SettlementTap {
  tap_id: string;
  state: TapStateName;
  deduction_id: string | null;
  settlement_id: string | null;
  charged_currency: string | null;
  charged_minor: string | null;
}

function reconcile(item: SettleRequest['items'][number], tap: SettlementTap | undefined): MismatchReason | undefined {
  if (!tap) return 'UNKNOWN_TAP';
  if (tap.state !== 'DEDUCTED' && tap.state !== 'SETTLED') return 'TAP_NOT_DEDUCTED';
  if (tap.deduction_id !== item.deductionId) return 'DEDUCTION_ID_MISMATCH';
  if (tap.charged_currency !== item.amount!.currencyCode || BigInt(tap.charged_minor!) !== BigInt(item.amount!.minorUnits)) {
    return 'AMOUNT_MISMATCH';
  }
  if (tap.state === 'SETTLED') return 'ALREADY_SETTLED';
  return undefined;
}

async function storedResponse(db: Db, settlementId: string, print: string): Promise<SettleResponse | undefined> {
  const s = await db('settlements')
    .where({ settlement_id: settlementId })
    .first('fingerprint', 'currency', asText(db, 'matched_total_minor'), 'mismatched_count');
  if (!s) return undefined;
  if (s.fingerprint !== print) throw requestIdReused('settlement_id', settlementId);
  const items = await db('settlement_items').where({ settlement_id: settlementId }).orderBy('position').select('tap_id', 'status', 'reason');
  return {
    settlementId,
    results: items.map((i) => ({
      tapId: i.tap_id,
      status: i.status === 'MATCHED' ? SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MATCHED : SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MISMATCHED,
      reason: i.reason ?? '',
    })),
    matchedTotal: { currencyCode: s.currency, minorUnits: s.matched_total_minor },
    mismatchedCount: Number(s.mismatched_count),
  };
}

export async function settle(ctx: IssuerContext, req: SettleRequest): Promise<SettleResponse> {
  validateSettle(req);
  const print = fingerprint(SettleRequest.encode(req).finish());
  const repeat = await storedResponse(ctx.db, req.settlementId, print);
  if (repeat) return repeat;
  try {
    const response = await ctx.db.transaction((trx) => reconcileAndStore(trx, ctx.now().getTime(), req, print));
    if (response.mismatchedCount > 0) {
      ctx.log.warn({ settlementId: req.settlementId, mismatched: response.mismatchedCount }, 'settlement has mismatched items');
    }
    return response;
  } catch (err) {
    // A concurrent delivery of the same settlement claimed the id first.
    if (!isUniqueViolation(err)) throw err;
    const raced = await storedResponse(ctx.db, req.settlementId, print);
    if (!raced) throw err;
    return raced;
  }
}

async function reconcileAndStore(trx: Db, now: number, req: SettleRequest, print: string): Promise<SettleResponse> {
  const currency = req.total!.currencyCode;
  const taps = new Map<string, SettlementTap>();
  for (const ids of chunks(req.items.map((i) => i.tapId))) {
    const rows = await trx('taps')
      .whereIn('tap_id', ids)
      .select('tap_id', 'state', 'deduction_id', 'settlement_id', 'charged_currency', asText(trx, 'charged_minor'));
    for (const row of rows) taps.set(row.tap_id, row);
  }
  // A DEDUCTING tap was sent for debit and its answer is not stored yet (in
  // flight, or lost and about to be asked again). The settlement proves the
  // debit happened, but calling it a mismatch would strand the tap DEDUCTED
  // and never settled: have the authorizer send the settlement again later.
  // Likewise a debt whose retry is in flight: the tap is DECLINED with a PENDING attempt.
  const retrying = new Set<string>();
  const declined = req.items.filter((item) => DEBT_STATES.includes(taps.get(item.tapId)?.state as TapStateName)).map((item) => item.tapId);
  for (const ids of chunks(declined)) {
    for (const row of await trx('debit_attempts').whereIn('tap_id', ids).where({ state: 'PENDING' }).select('tap_id')) retrying.add(row.tap_id);
  }
  const pending = req.items.filter((item) => taps.get(item.tapId)?.state === 'DEDUCTING' || retrying.has(item.tapId)).map((item) => item.tapId);
  if (pending.length > 0) {
    throw apiError('DEBIT_OUTCOME_PENDING', `${pending.length} taps of the settlement await their debit answer; send it again later`, {
      settlement_id: req.settlementId,
      tap_ids: pending.slice(0, 20).join(','),
    });
  }
  const results: SettlementItemResult[] = [];
  const settled: string[] = [];
  let matchedTotal = 0n;
  for (const item of req.items) {
    const reason = reconcile(item, taps.get(item.tapId));
    if (reason) {
      results.push({ tapId: item.tapId, status: SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MISMATCHED, reason });
    } else {
      results.push({ tapId: item.tapId, status: SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MATCHED, reason: '' });
      settled.push(item.tapId);
      matchedTotal += BigInt(item.amount!.minorUnits);
    }
  }
  const mismatchedCount = results.length - settled.length;

  // The settlement row claims the id; everything below commits or rolls back with it.
  await trx('settlements').insert({
    settlement_id: req.settlementId,
    fingerprint: print,
    authorizer_id: req.authorizerId,
    currency,
    total_minor: req.total!.minorUnits,
    matched_total_minor: matchedTotal.toString(),
    mismatched_count: mismatchedCount,
    received_at: String(now),
  });
  const itemRows = req.items.map((item, position) => ({
    settlement_id: req.settlementId,
    position,
    tap_id: item.tapId,
    deduction_id: item.deductionId,
    amount_currency: item.amount!.currencyCode,
    amount_minor: item.amount!.minorUnits,
    status: results[position].status === SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MATCHED ? 'MATCHED' : 'MISMATCHED',
    reason: results[position].reason || null,
  }));
  for (const batch of chunks(itemRows)) await insertRows(trx, 'settlement_items', batch);
  await moveTaps(trx, { from: 'DEDUCTED', to: 'SETTLED', tapIds: settled, now, set: { settlement_id: req.settlementId } });
  return {
    settlementId: req.settlementId,
    results,
    matchedTotal: { currencyCode: currency, minorUnits: matchedTotal.toString() },
    mismatchedCount,
  };
}
