// One way to run a service, shared by the three: open its database (with its
// migrations), let the service build its parts on it, serve its gRPC services
// with health, reflection, readiness (health NOT_SERVING while the database
// does not answer or cannot write, common/storage.ts) and metrics, start its workers, and close all of it in one
// order. Whatever fails while starting releases what was already taken.
import { openDatabase, type Db, type Migration } from './db.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { startServer, type ServiceBinding } from './server.js';
import { StorageGuard, storageProbeMigration } from './storage.js';
import type { TlsConfig } from './tls.js';

/** Something that runs in the background of a server: an outbox worker, a watch loop. */
export interface Background {
  start(): void;
  stop(): Promise<void> | void;
}

export interface ServiceParts {
  services: ServiceBinding[];
  metrics?: Metrics;
  /** Started once the server listens (work left by an earlier run goes out at once); stopped, all together, after the server has closed, so calls being answered are committed first. */
  workers?: Background[];
  /** Started after the workers; stopped before the server closes: long-lived calls that never end on their own (watch streams), which the server would otherwise wait out. */
  streams?: Background[];
  /** Releases what the parts hold (clients of peers), after the workers stop and before the database closes. */
  release?: () => void | Promise<void>;
}

export interface RunnerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  tls?: TlsConfig;
  /** Port of the HTTP /metrics listener (0 picks a free one); no listener when unset. */
  metricsPort?: number;
  /** Time between database probes of the health check. */
  healthProbeIntervalMs?: number;
  log: Logger;
  database: { url: string; migrations: Migration[]; migrationsTable: string };
}

export interface RunningService {
  /** host:port the server listens on (the real port when 0 was asked). */
  address: string;
  port: number;
  /** host:port of the HTTP /metrics listener, when metricsPort was given. */
  metricsAddress?: string;
  db: Db;
  /** Whether the server can write (health follows it). */
  storage: StorageGuard;
  /** Stops taking calls, lets in-flight calls finish, stops the workers and closes the database; once, however often called. */
  close(): Promise<void>;
}

export async function runService(
  opts: RunnerOptions,
  build: (db: Db, storage: StorageGuard) => ServiceParts | Promise<ServiceParts>,
): Promise<RunningService> {
  const { log } = opts;
  const db = await openDatabase({ ...opts.database, migrations: [...opts.database.migrations, storageProbeMigration], log });
  let parts: ServiceParts | undefined;
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  // A write refused for want of space turns health NOT_SERVING at once; the write probe turns it back.
  const storage = new StorageGuard(db, (full, err) => {
    if (full) log.error({ code: (err as { code?: string })?.code, health: 'NOT_SERVING' }, 'storage full: refusing writes; health is NOT_SERVING');
    else log.info({ health: 'SERVING' }, 'storage writable again; serving');
    if (!server) return;
    for (const s of ['', ...(parts?.services ?? []).map((b) => b.name)]) server.health.setStatus(s, full ? 'NOT_SERVING' : 'SERVING');
  });
  try {
    parts = await build(db, storage);
    storage.attach(parts.metrics);
    server = await startServer({
      services: parts.services,
      host: opts.host,
      port: opts.port,
      tls: opts.tls,
      metrics: parts.metrics,
      metricsPort: opts.metricsPort,
      // The database answers and a write commits (a full disk fails it).
      readiness: { check: () => storage.check(), intervalMs: opts.healthProbeIntervalMs },
      log,
    });
  } catch (err) {
    await parts?.release?.();
    await db.destroy();
    throw err;
  }
  const workers = parts.workers ?? [];
  const streams = parts.streams ?? [];
  for (const w of workers) w.start();
  for (const s of streams) s.start();

  let closing: Promise<void> | undefined;
  const running = server;
  const release = parts.release;
  return {
    address: running.address,
    port: running.port,
    metricsAddress: running.metricsAddress,
    db,
    storage,
    close: () =>
      (closing ??= (async () => {
        for (const s of streams) await s.stop();
        await running.close();
        await Promise.all(workers.map((w) => w.stop()));
        await release?.();
        await db.destroy();
      })()),
  };
}
