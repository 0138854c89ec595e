// What the bench reads from the issuer's SQLite file (reads only) while the
// issuer runs (WAL: readers in another process neither block nor are blocked
// by its writes): how many taps reached each state, and each tap's
// accept -> settled lag from its stored history (tapped_at by the terminal's
// clock, SETTLED changed_at by the issuer's; one machine, one clock).
import knexFactory, { type Knex } from 'knex';
import { isPostgresUrl, toNumber } from '../common/db.js';

export class IssuerStore {
  private constructor(private readonly db: Knex) {}

  /** The issuer's SQLite file, or its postgres:// URL (the bench's PostgreSQL mode). */
  static open(file: string): IssuerStore {
    if (isPostgresUrl(file)) return new IssuerStore(knexFactory({ client: 'pg', connection: file, pool: { min: 1, max: 2 } }));
    const db = knexFactory({
      client: 'sqlite3',
      // Read-write open (knex cannot open read-only), but the bench only ever reads.
      connection: { filename: file },
      useNullAsDefault: true,
      pool: { min: 1, max: 1 },
    });
    return new IssuerStore(db);
  }

  /** Taps per state, optionally only those of some terminals. */
  async stateCounts(terminalIds?: string[]): Promise<Record<string, number>> {
    const q = this.db('taps').groupBy('state').select('state').count({ n: '*' });
    if (terminalIds) q.whereIn('terminal_id', terminalIds);
    const out: Record<string, number> = {};
    for (const row of (await q) as { state: string; n: unknown }[]) out[row.state] = toNumber(row.n);
    return out;
  }

  /** Taps in one state (uses the (state, id) index). */
  async countInState(state: string): Promise<number> {
    const [row] = await this.db('taps').where({ state }).count({ n: '*' });
    return toNumber(row.n);
  }

  /** Taps not yet in a final state (SETTLED, REJECTED, DECLINED, CAPPED). */
  async inFlight(): Promise<number> {
    const [row] = await this.db('taps').whereIn('state', ['RECEIVED', 'DEDUCTING', 'DEDUCTED']).count({ n: '*' });
    return toNumber(row.n);
  }

  /**
   * (tapped_at, settled_at) of every settled tap of these terminals tapped in
   * [fromMs, toMs), epoch ms.
   */
  async settledTimes(terminalIds: string[], fromMs: number, toMs: number): Promise<{ tappedAt: number; settledAt: number }[]> {
    const rows = await this.db('taps as t')
      .join('tap_state_changes as c', 'c.tap_id', 't.tap_id')
      .where('c.state', 'SETTLED')
      .whereIn('t.terminal_id', terminalIds)
      .where('t.tapped_at', '>=', fromMs)
      .where('t.tapped_at', '<', toMs)
      .select('t.tapped_at', 'c.changed_at');
    return rows.map((r: { tapped_at: number | string; changed_at: number | string }) => ({ tappedAt: Number(r.tapped_at), settledAt: Number(r.changed_at) }));
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}
