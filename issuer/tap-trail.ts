// The audit trail of each tap in the issuer's logs, one line per tap and hop,
// under the tap's own trace id (from the traceparent it arrived with): a tap
// is followed across batches that mix many taps by grepping its trace id.
import { chunks, type Db } from '../common/db.js';
import { trailLogger, type Logger } from '../common/log.js';
import { itemTraceFields } from '../common/trace.js';
import {
  settlementItemStatusToJSON,
  tapReportStatusToJSON,
  type SettleRequest,
  type SettleResponse,
  type TapReportRequest,
  type TapReportResponse,
} from '../gen/tapcredit/issuer/v1/issuer.js';

/** One line per reported tap: what the issuer did with it. */
export function logReportedTaps(log: Logger, req: TapReportRequest, res: TapReportResponse): void {
  const trail = trailLogger(log);
  res.results.forEach((r, i) => {
    const tap = req.taps[i];
    trail.info(
      { ...itemTraceFields(tap?.traceparent), tapId: r.tapId, cardId: tap?.cardId, status: tapReportStatusToJSON(r.status), reason: r.reason || undefined },
      'tap received',
    );
  });
}

/** One line per settled item, under the trace its tap arrived with. Never fails the settlement. */
export async function logSettledTaps(db: Db, log: Logger, req: SettleRequest, res: SettleResponse): Promise<void> {
  const traces = new Map<string, string | null>();
  try {
    for (const ids of chunks(req.items.map((i) => i.tapId))) {
      for (const row of await db('taps').whereIn('tap_id', ids).select('tap_id', 'traceparent')) traces.set(row.tap_id, row.traceparent);
    }
  } catch (err) {
    log.warn({ err: String(err) }, 'could not read the taps\' traces; settled taps are logged without them');
  }
  const trail = trailLogger(log);
  res.results.forEach((r, i) => {
    trail.info(
      {
        ...itemTraceFields(traces.get(r.tapId) ?? undefined),
        tapId: r.tapId,
        settlementId: req.settlementId,
        deductionId: req.items[i]?.deductionId,
        status: settlementItemStatusToJSON(r.status),
        reason: r.reason || undefined,
      },
      'tap settled',
    );
  });
}
