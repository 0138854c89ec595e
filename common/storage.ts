// Whether a server can write: the readiness probe commits a small write
// (a padded row inserted and deleted in one transaction) besides `select 1`,
// so a full disk or database turns health NOT_SERVING even before a request
// meets it, and SERVING again once a write commits, without a restart.
// A write refused for want of space anywhere in the server (noteFailure)
// flips the state at once, before the next probe.
import { randomUUID } from 'node:crypto';
import { isPostgres, type Db, type Migration } from './db.js';
import { isStorageFullError } from './errors.js';
import type { Metrics } from './metrics.js';

export const STORAGE_PROBE_TABLE = 'storage_probe';

/** Bytes of the probe row: over a 4 KiB page, so the probe needs fresh pages as a batch of rows would. */
const PROBE_PAD = 6000;

/**
 * The probe's table. Services that share one PostgreSQL database share it too
 * (each probe deletes only its own row), hence IF NOT EXISTS.
 */
export const storageProbeMigration: Migration = {
  name: '9000_storage_probe',
  up: async (db) => {
    await db.raw(`CREATE TABLE IF NOT EXISTS ${STORAGE_PROBE_TABLE} (id VARCHAR(64) PRIMARY KEY, pad TEXT NOT NULL)`);
  },
};

export class StorageGuard {
  private isFull = false;
  private metrics?: Metrics;

  constructor(
    private readonly db: Db,
    /** Told of each change (the runner sets health from it). */
    private readonly onChange?: (full: boolean, err?: unknown) => void,
  ) {}

  /** Reports to these metrics from now on (the service builds them after the guard). */
  attach(metrics: Metrics | undefined): void {
    this.metrics = metrics;
    metrics?.storageFull.set(this.isFull ? 1 : 0);
  }

  /** True while the last write (probe or request) was refused for want of space. */
  get full(): boolean {
    return this.isFull;
  }

  /** Called with an error a write met: a storage-full error marks the server full until a probe commits. Returns whether it was one. */
  noteFailure(err: unknown): boolean {
    if (!isStorageFullError(err)) return false;
    this.metrics?.storageWriteFailures.inc();
    this.set(true, err);
    return true;
  }

  /** The readiness check: the database answers and a write commits. Rejects otherwise. */
  async check(): Promise<void> {
    await this.db.raw('select 1');
    const id = randomUUID();
    try {
      await this.db.transaction(async (trx) => {
        // Made by the database, so an error's text (which quotes the statement) stays short.
        const pad = isPostgres(trx) ? trx.raw(`repeat('x', ${PROBE_PAD})`) : trx.raw(`hex(zeroblob(${PROBE_PAD / 2}))`);
        await trx(STORAGE_PROBE_TABLE).insert({ id, pad });
        await trx(STORAGE_PROBE_TABLE).where({ id }).delete();
      });
    } catch (err) {
      if (this.noteFailure(err)) throw new Error('storage full: a write probe was refused for want of space');
      throw err;
    }
    this.set(false);
  }

  private set(full: boolean, err?: unknown): void {
    if (full === this.isFull) return;
    this.isFull = full;
    this.metrics?.storageFull.set(full ? 1 : 0);
    this.onChange?.(full, err);
  }
}
