// One knex database per service: an embedded SQLite file by default, or
// PostgreSQL when a postgres:// URL is given. SQL stays portable.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Logger } from './log.js';

export type Db = Knex;

export interface Migration {
  name: string;
  up(db: Knex): Promise<void>;
  down?(db: Knex): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres://... or a SQLite file path (":memory:" for tests that need no file). */
  url: string;
  migrations: Migration[];
  /** Separate migration bookkeeping per service when several share one PostgreSQL database. */
  migrationsTable: string;
  /** Where knex's own warnings go (e.g. a lost connection), as JSON lines; knex prints to the console otherwise. */
  log?: Logger;
}

function migrationSource(migrations: Migration[]): Knex.MigrationSource<Migration> {
  return {
    getMigrations: async () => migrations,
    getMigrationName: (m) => m.name,
    getMigration: async (m) => ({ up: m.up, down: m.down ?? (async () => {}) }),
  };
}

export const isPostgresUrl = (url: string) => /^postgres(ql)?:\/\//.test(url);

/** True for a PostgreSQL connection (or transaction), where row locks and NOTIFY exist. */
export const isPostgres = (db: Knex) => db.client.config.client === 'pg';

export async function openDatabase(opts: DatabaseOptions): Promise<Knex> {
  let config: Knex.Config;
  if (isPostgresUrl(opts.url)) {
    config = { client: 'pg', connection: opts.url, pool: { min: 1, max: 10 } };
  } else {
    if (opts.url !== ':memory:') mkdirSync(dirname(opts.url), { recursive: true });
    config = {
      client: 'sqlite3',
      connection: { filename: opts.url },
      useNullAsDefault: true,
      // One connection: SQLite has one writer anyway, and a single connection
      // serializes transactions instead of failing them with SQLITE_BUSY.
      pool: {
        min: 1,
        max: 1,
        afterCreate: (conn: any, done: (err: Error | null, conn: any) => void) => {
          // WAL with synchronous=FULL: a committed transaction survives a power
          // loss, which a fare system owes to every accepted tap and every debit.
          conn.exec(
            'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;',
            (err: Error | null) => done(err, conn),
          );
        },
      },
    };
  }
  if (opts.log) {
    const log = opts.log.child({ component: 'database' });
    config.log = {
      warn: (message: unknown) => log.warn(String(message)),
      error: (message: unknown) => log.error(String(message)),
      deprecate: (method: unknown, alternative: unknown) => log.warn(`${method} is deprecated; use ${alternative}`),
      debug: (message: unknown) => log.debug({ message }, 'knex'),
    };
  }
  const db = knexFactory(config);
  if (!isPostgresUrl(opts.url)) keepStorageFullErrors(db);
  const migrate = () => db.migrate.latest({ migrationSource: migrationSource(opts.migrations), tableName: opts.migrationsTable });
  try {
    await (isPostgresUrl(opts.url) ? withAdvisoryLock(db, opts.migrationsTable, migrate) : migrate());
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return db;
}

/**
 * SQLite rolls a transaction back by itself when a write fails with
 * SQLITE_FULL; knex's ROLLBACK then fails ("no transaction is active") and
 * its error replaces the first one, so a full disk would read as an unknown
 * fault. This transaction rollback keeps the SQLITE_FULL error (common/storage.ts
 * and errors.ts answer it as STORAGE_FULL) and still rolls back whatever is open.
 */
function keepStorageFullErrors(db: Knex): void {
  const client = db.client as { transaction: (...args: unknown[]) => any };
  const make = client.transaction.bind(client);
  client.transaction = (...args: unknown[]) => {
    const trx = make(...args);
    const rollback = trx.rollback.bind(trx);
    trx.rollback = (conn: unknown, error: unknown) => {
      if ((error as { code?: unknown })?.code !== 'SQLITE_FULL') return rollback(conn, error);
      return trx.trxClient
        .query(conn, 'ROLLBACK')
        .catch(() => {}) // already rolled back by SQLite
        .then(() => {
          trx._completed = true;
          trx._rejecter(error);
        });
    };
    return trx;
  };
}

/**
 * Runs fn while holding a PostgreSQL session lock named by key. Replicas that
 * start together on one database migrate one after the other: the first runs
 * the migrations, the others then find nothing to do (knex's own lock table
 * would fail them with "Migration table is already locked" instead, and two
 * replicas creating knex's tables at once collide). The lock goes with the
 * connection, so a replica that dies while migrating does not keep it.
 */
async function withAdvisoryLock<T>(db: Knex, key: string, fn: () => Promise<T>): Promise<T> {
  const conn = await db.client.acquireConnection();
  try {
    await db.raw('SELECT pg_advisory_lock(hashtext(?))', [key]).connection(conn);
    try {
      return await fn();
    } finally {
      await db.raw('SELECT pg_advisory_unlock(hashtext(?))', [key]).connection(conn);
    }
  } finally {
    await db.client.releaseConnection(conn);
  }
}

/**
 * Runs reads that must agree with each other (a report, an invariant check)
 * in one transaction that sees a single snapshot: REPEATABLE READ READ ONLY
 * on PostgreSQL, whose default READ COMMITTED would let a commit land between
 * two of the queries; a SQLite read transaction in WAL mode is a snapshot already.
 */
export function snapshot<T>(db: Knex, read: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  const config = isPostgres(db) ? { isolationLevel: 'repeatable read' as const, readOnly: true } : undefined;
  return db.transaction(read, config);
}

/** Selects a column as text, so int64 values are never read back as lossy JS numbers. */
export const asText = (db: Knex, column: string, alias = column.split('.').pop()!) =>
  db.raw('CAST(?? AS TEXT) AS ??', [column, alias]);

/** Sums an int64 column as text (0 when no row), so a total is never read back as a lossy JS number. */
export const sumAsText = (db: Knex, column: string, alias: string) => db.raw('CAST(COALESCE(SUM(??), 0) AS TEXT) AS ??', [column, alias]);

/** Reads a count or id from either driver (pg returns bigint aggregates as strings). */
/** Rows per multi-row INSERT / ids per IN (...): well inside SQLite's and PostgreSQL's bound-parameter limits. */
export const CHUNK = 500;

/** items in slices of at most size, for statements that take a list. */
export function chunks<T>(items: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export const toNumber = (value: unknown): number => Number(value ?? 0);

/** Returns true when err is a unique-key violation (a claimed id) on either driver. */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code !== 'string') return false;
  if (e.code === '23505') return true;
  return e.code.startsWith('SQLITE_CONSTRAINT') && /UNIQUE|PRIMARY KEY/.test(String(e.message));
}

/**
 * Raises an int64 column of many rows at once, one UPDATE per chunk of
 * keys: each row takes its new value only where that is higher than the one
 * stored (or none is), so a concurrent writer that stored a higher value is
 * never overwritten, and `also` is set on the rows that moved. Values are
 * decimal strings. Portable SQL (CASE and CAST only).
 */
export async function raiseColumn(
  db: Knex,
  table: string,
  key: string,
  column: string,
  values: Map<string, string>,
  also: Record<string, unknown> = {},
): Promise<void> {
  const entries = [...values];
  for (let i = 0; i < entries.length; i += 400) {
    const part = entries.slice(i, i + 400);
    const raised = () => db.raw(`CASE ?? ${part.map(() => 'WHEN ? THEN CAST(? AS BIGINT)').join(' ')} END`, [key, ...part.flat()]);
    await db(table)
      .whereIn(key, part.map(([k]) => k))
      .where((q) => q.whereNull(column).orWhere(column, '<', raised()))
      .update({ [column]: raised(), ...also });
  }
}

/** Runs fn again when a concurrent writer claimed the same id first (only possible on PostgreSQL); the rerun sees its row. */
export async function retryOnUniqueViolation<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isUniqueViolation(err)) throw err;
    }
  }
}

/**
 * Inserts rows with one multi-row INSERT ... VALUES (...), (...) statement
 * (portable; knex writes SQLite inserts as a UNION ALL of SELECTs, slower to
 * parse and build). Every row must have the same columns. Keep rows x
 * columns below the bind-parameter limits (callers insert in chunks).
 */
export async function insertRows(db: Knex, table: string, rows: Record<string, unknown>[]): Promise<void> {
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]);
  const values: Knex.RawBinding[] = [];
  for (const row of rows) {
    if (Object.keys(row).length !== columns.length) throw new Error(`insertRows(${table}): rows with different columns`);
    for (const c of columns) {
      if (!(c in row)) throw new Error(`insertRows(${table}): a row has no ${c}`);
      const v = row[c];
      values.push(v === undefined ? null : (v as Knex.RawBinding));
    }
  }
  const tuple = `(${columns.map(() => '?').join(', ')})`;
  await db.raw(`INSERT INTO ?? (${columns.map(() => '??').join(', ')}) VALUES ${rows.map(() => tuple).join(', ')}`, [table, ...columns, ...values]);
}
