// The authorizer's metrics: debits by outcome (counted as they are decided),
// and its settlement outbox: debited fares not yet acknowledged by their
// issuer, and how long the oldest has waited (the settlement lag).
import { asText, toNumber, type Db } from '../common/db.js';
import { trailLogger, type Logger } from '../common/log.js';
import { Metrics, ageSeconds } from '../common/metrics.js';
import { itemTraceFields } from '../common/trace.js';
import type { DeductItem } from '../gen/tapcredit/authorizer/v1/authorizer.js';

/** What the Deduct handler reports per item: the outcome as stored. */
export interface DebitOutcome {
  requestId: string;
  status: 'DEBITED' | 'DECLINED' | 'REJECTED';
  deductionId?: string;
  declineReason?: string;
  errorReason?: string;
}

export interface AuthorizerMetrics {
  metrics: Metrics;
  /** Counts each debit by outcome and logs it under its tap's own trace. */
  observeDebits(items: DeductItem[], outcomes: DebitOutcome[], log: Logger): void;
}

export function authorizerMetrics(db: Db): AuthorizerMetrics {
  const metrics = new Metrics();
  const debits = metrics.counter('tapcredit_authorizer_debits_total', 'Fare debits decided, by outcome (debited, declined, rejected) and reason.', ['outcome', 'reason']);

  // Debited fares owed to an issuer: not yet in a settlement, or in one the issuer has not acknowledged.
  const unsettled = () =>
    db('deductions')
      .leftJoin('settlements', 'deductions.settlement_id', 'settlements.settlement_id')
      .where('deductions.status', 'DEBITED')
      .where((q) => q.whereNull('deductions.settlement_id').orWhere('settlements.state', 'PENDING'));
  metrics.gauge('tapcredit_authorizer_unsettled_debits', 'Debited fares not yet acknowledged by their issuer (the settlement outbox).', async () =>
    toNumber((await unsettled().count({ n: '*' }))[0].n),
  );
  metrics.gauge('tapcredit_authorizer_settlement_lag_seconds', 'Time since the oldest unsettled debit was booked; 0 when all are settled.', async () => {
    const oldest = await unsettled().orderBy('deductions.seq').first(asText(db, 'deductions.created_at', 'created_at'));
    return ageSeconds(oldest?.created_at);
  });
  metrics.gauge('tapcredit_authorizer_pending_settlements', 'Settlement batches sent or to send that their issuer has not acknowledged.', async () =>
    toNumber((await db('settlements').where({ state: 'PENDING' }).count({ n: '*' }))[0].n),
  );

  return {
    metrics,
    observeDebits(items, outcomes, log) {
      const trail = trailLogger(log);
      outcomes.forEach((o, i) => {
        const reason = o.status === 'DECLINED' ? (o.declineReason ?? '') : o.status === 'REJECTED' ? (o.errorReason ?? '') : '';
        debits.inc({ outcome: o.status.toLowerCase(), reason });
        trail.info({ ...itemTraceFields(items[i]?.traceparent), requestId: o.requestId, status: o.status, deductionId: o.deductionId, reason: reason || undefined }, 'debit');
      });
    },
  };
}
