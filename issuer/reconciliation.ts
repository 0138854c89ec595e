// The reconciliation report of one service day: the day's taps counted and
// summed by state, what was debited against what was settled, and every
// settlement item the issuer found not to match (stored by Settle). Read-only.
import { asText, snapshot, sumAsText, toNumber, type Db } from '../common/db.js';
import { invalidArgument } from '../common/errors.js';
import { Violations, pageSize } from '../common/validate.js';
import {
  TapState,
  tapStateFromJSON,
  type GetReconciliationReportRequest,
  type GetReconciliationReportResponse,
  type ReconciliationMismatch,
  type TapStateTotal,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import { isCalendarDate } from './enrollment.js';
import { serviceDayRange, UTC_DAYS, type ServiceDayConfig } from './service-day.js';

export const DEFAULT_MISMATCH_PAGE_SIZE = 100;
export const MAX_MISMATCH_PAGE_SIZE = 1000;

// Page tokens name the day and the last mismatch returned (its settlement_items row).
const encodeToken = (day: string, lastId: number) => Buffer.from(JSON.stringify({ d: day, k: lastId })).toString('base64url');

function decodeToken(day: string, token: string): number {
  try {
    const { d, k } = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (d === day && Number.isSafeInteger(k) && k > 0) return k;
  } catch {
    // falls through to the error below
  }
  throw invalidArgument([{ field: 'page_token', description: 'is not a token from a previous page of this report' }]);
}

export interface ReportOptions {
  /** Currency of the issuer's fares: every sum is in it. */
  currencyCode: string;
  /** The issuer's service day; the UTC date when unset. */
  serviceDay?: ServiceDayConfig;
}

export async function reconciliationReport(db: Db, req: GetReconciliationReportRequest, opts: ReportOptions): Promise<GetReconciliationReportResponse> {
  const v = new Violations();
  if (!isCalendarDate(req.serviceDay)) v.add('service_day', 'must be a date "YYYY-MM-DD"');
  const size = pageSize(v, req.pageSize, DEFAULT_MISMATCH_PAGE_SIZE, MAX_MISMATCH_PAGE_SIZE);
  v.throwIfAny();
  const after = req.pageToken ? decodeToken(req.serviceDay, req.pageToken) : 0;
  const { start, end } = serviceDayRange(req.serviceDay, opts.serviceDay ?? UTC_DAYS);
  const money = (minorUnits: bigint) => ({ currencyCode: opts.currencyCode, minorUnits: minorUnits.toString() });

  // One snapshot: the state totals and the mismatches describe the same moment.
  return snapshot(db, async (trx) => {
    const rows = await trx('taps')
      .where('tapped_at', '>=', start)
      .where('tapped_at', '<', end)
      .groupBy('state')
      .select('state', trx.raw('COUNT(*) AS n'), sumAsText(trx, 'fare_minor', 'fares'), sumAsText(trx, 'charged_minor', 'charged'));
    const states: TapStateTotal[] = rows
      .map((r: { state: string; n: unknown; fares: string; charged: string }) => {
        const state = tapStateFromJSON(`TAP_STATE_${r.state}`);
        return {
          state: state === TapState.UNRECOGNIZED ? TapState.TAP_STATE_UNSPECIFIED : state,
          tapCount: String(toNumber(r.n)),
          fares: money(BigInt(r.fares)),
          charged: money(BigInt(r.charged)),
        };
      })
      .sort((a, b) => a.state - b.state);
    const of = (...wanted: TapState[]) => {
      const picked = states.filter((s) => wanted.includes(s.state));
      return {
        count: picked.reduce((n, s) => n + BigInt(s.tapCount), 0n),
        charged: picked.reduce((n, s) => n + BigInt(s.charged!.minorUnits), 0n),
      };
    };
    const debited = of(TapState.TAP_STATE_DEDUCTED, TapState.TAP_STATE_SETTLED);
    const settled = of(TapState.TAP_STATE_SETTLED);

    // A mismatch belongs to the day of the tap it names; one naming an unknown tap, to the day its settlement arrived.
    const mismatched = () =>
      trx('settlement_items as i')
        .join('settlements as s', 's.settlement_id', 'i.settlement_id')
        .leftJoin('taps as t', 't.tap_id', 'i.tap_id')
        .where('i.status', 'MISMATCHED')
        .where((q) =>
          q
            .where((known) => known.where('t.tapped_at', '>=', start).where('t.tapped_at', '<', end))
            .orWhere((unknown) => unknown.whereNull('t.id').where('s.received_at', '>=', start).where('s.received_at', '<', end)),
        );
    const [{ n: mismatchCount }] = await mismatched().count({ n: '*' });
    const page = await mismatched()
      .where('i.id', '>', after)
      .orderBy('i.id')
      .limit(size + 1)
      .select('i.id', 'i.settlement_id', 'i.position', 'i.tap_id', 'i.deduction_id', 'i.amount_currency', 'i.reason', asText(trx, 'i.amount_minor', 'amount_minor'), asText(trx, 's.received_at', 'received_at'));
    const mismatches: ReconciliationMismatch[] = page.slice(0, size).map((m) => ({
      settlementId: m.settlement_id,
      position: toNumber(m.position),
      tapId: m.tap_id,
      deductionId: m.deduction_id,
      amount: { currencyCode: m.amount_currency, minorUnits: m.amount_minor },
      reason: m.reason ?? '',
      receivedAt: new Date(Number(m.received_at)),
    }));

    return {
      serviceDay: req.serviceDay,
      dayStart: new Date(start),
      dayEnd: new Date(end),
      states,
      tapCount: String(states.reduce((n, s) => n + BigInt(s.tapCount), 0n)),
      debitedCount: debited.count.toString(),
      debited: money(debited.charged),
      settledCount: settled.count.toString(),
      settled: money(settled.charged),
      unsettled: money(debited.charged - settled.charged),
      mismatchCount: String(toNumber(mismatchCount)),
      mismatches,
      nextPageToken: page.length > size ? encodeToken(req.serviceDay, toNumber(page[size - 1].id)) : '',
    };
  });
}
