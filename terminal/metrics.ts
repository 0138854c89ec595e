// The terminal's metrics: its outbox of accepted taps not yet acknowledged by
// the issuer, and the deny list it decides with. Read when Prometheus scrapes.
import { asText, toNumber, type Db } from '../common/db.js';
import { Metrics, ageSeconds } from '../common/metrics.js';

export function terminalMetrics(db: Db): Metrics {
  const metrics = new Metrics();
  const unsent = () => db('taps').whereNull('acked_at');
  metrics.gauge('tapcredit_terminal_unsent_taps', 'Accepted taps the issuer has not acknowledged yet (the forwarder outbox).', async () =>
    toNumber((await unsent().count({ n: '*' }))[0].n),
  );
  metrics.gauge('tapcredit_terminal_oldest_unsent_tap_age_seconds', 'Age of the oldest unacknowledged tap; 0 when none waits.', async () => {
    const oldest = await unsent().orderBy('sequence').first(asText(db, 'tapped_at'));
    return ageSeconds(oldest?.tapped_at);
  });
  metrics.gauge('tapcredit_terminal_held_taps', 'Unsent taps held back for an operator: the issuer answered TAP_ID_CONFLICT or refused them as malformed.', async () =>
    toNumber((await unsent().whereNotNull('held_reason').count({ n: '*' }))[0].n),
  );
  metrics.gauge('tapcredit_terminal_deny_list_version', 'Version of the deny list this terminal holds (0: never synced).', async () => {
    const meta = await db('terminal_meta').where({ id: 1 }).first(asText(db, 'deny_list_version'));
    return Number(meta?.deny_list_version ?? 0);
  });
  metrics.gauge('tapcredit_terminal_deny_list_size', 'Cards on the deny list this terminal holds.', async () =>
    toNumber((await db('deny_list').count({ n: '*' }))[0].n),
  );
  return metrics;
}
