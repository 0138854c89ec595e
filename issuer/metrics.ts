// The issuer's metrics: its debit outbox (taps waiting for the authorizer's
// answer) and how far settlement lags behind the debits. Read when
// Prometheus scrapes, from indexed columns (state, id).
import { asText, toNumber, type Db } from '../common/db.js';
import { Metrics, ageSeconds } from '../common/metrics.js';

export function issuerMetrics(db: Db): Metrics {
  const metrics = new Metrics();
  const awaitingDebit = () => db('taps').whereIn('state', ['RECEIVED', 'DEDUCTING']);
  metrics.gauge('tapcredit_issuer_taps_awaiting_debit', 'Taps stored but not yet answered by the authorizer (the debit outbox).', async () =>
    toNumber((await awaitingDebit().count({ n: '*' }))[0].n),
  );
  metrics.gauge('tapcredit_issuer_oldest_tap_awaiting_debit_age_seconds', 'Time since the oldest tap awaiting debit was received; 0 when none waits.', async () => {
    const oldest = await awaitingDebit().orderBy('id').first(asText(db, 'received_at'));
    return ageSeconds(oldest?.received_at);
  });
  metrics.gauge('tapcredit_issuer_taps_awaiting_settlement', 'Taps debited (DEDUCTED) that no settlement has paid yet.', async () =>
    toNumber((await db('taps').where({ state: 'DEDUCTED' }).count({ n: '*' }))[0].n),
  );
  metrics.gauge('tapcredit_issuer_settlement_lag_seconds', 'Time since the oldest unsettled debited tap was debited; 0 when all are settled.', async () => {
    const oldest = await db('taps').where({ state: 'DEDUCTED' }).min({ at: 'updated_at' });
    return ageSeconds(oldest[0]?.at);
  });
  metrics.gauge(
    'tapcredit_issuer_taps_with_implausible_time',
    'Taps whose terminal clock was implausible (a clock that jumped), by flag: kept, and priced by the time they were received.',
    async () =>
      (await db('taps').whereNotNull('clock_flag').groupBy('clock_flag').select('clock_flag', db.raw('COUNT(*) AS n'))).map((r: { clock_flag: string; n: unknown }) => ({
        labels: { flag: r.clock_flag },
        value: toNumber(r.n),
      })),
    ['flag'],
  );
  return metrics;
}
