// Starts the issuer: its database, the IssuerService gRPC server and the
// debit outbox worker that sends RECEIVED taps to the credit authorizer.
import type { KeyObject } from 'node:crypto';
import { isPostgresUrl, openDatabase, type Db } from '../common/db.js';
import { Leases } from '../common/leases.js';
import { createLogger, type Logger } from '../common/log.js';
import { startServer } from '../common/server.js';
import { passEncodedResponses } from '../common/server-stream.js';
import { assertOwnIdentity, type TlsConfig } from '../common/tls.js';
import { Worker } from '../common/worker.js';
import { IssuerServiceService } from '../gen/tapcredit/issuer/v1/issuer.js';
import { authorizerClient } from './authorizer-client.js';
import type { DebtRetryConfig, IssuerContext } from './context.js';
import { debtStep } from './debts.js';
import { DEFAULT_DEDUCT_BATCH_SIZE, deductStep } from './deductions.js';
import { DenyListFeed } from './deny-list-feed.js';
import type { FareCapConfig } from './fares.js';
import { issuerHandlers } from './handlers.js';
import { issuerMetrics } from './metrics.js';
import { MIGRATIONS_TABLE, migrations } from './migrations.js';
import { issuerPolicy } from './policy.js';

export interface IssuerConfig {
  issuerId: string;
  /** Issuer code printed in this issuer's cards. */
  issuerCode: string;
  /** Currency of fares, ISO 4217. */
  currencyCode: string;
  /** SQLite file path or postgres:// URL. */
  databaseUrl: string;
  host: string;
  port: number;
  /** host:port of the credit authorizer; several comma-separated for its replicas (see common/rpc.ts channelTarget). */
  authorizerAddress: string;
  /** Card master key (verifies card proofs). */
  masterKey: Buffer;
  /** Ed25519 key that signs credit flags. */
  signingKey: KeyObject;
  /** Taps per Deduct call (default 1000). */
  deductBatchSize?: number;
  /** Poll interval of the debit worker when idle (default 200 ms). */
  deductIntervalMs?: number;
  /** Batching window of the debit worker: how long after taps are stored it waits for more to join the Deduct batch (default 0). */
  deductWindowMs?: number;
  /**
   * Debit workers draining the outbox at once (default 1). Each claims its
   * own batch (leases, as replicas do), so one worker's Deduct call overlaps
   * another's commits instead of the database idling while it waits.
   */
  deductConcurrency?: number;
  /** Daily fare cap per card and the service-day boundary; no cap when unset. */
  fareCap?: FareCapConfig;
  /** Backoff of debt retries (default: 1 h, doubling, at most 24 h). */
  debtRetry?: DebtRetryConfig;
  /** How often the debt worker looks for debts due for a retry (default 1000 ms). */
  debtPollIntervalMs?: number;
  /** Clock tolerance between terminals for the clone check (default 60 s). */
  cloneClockSkewMs?: number;
  /**
   * How often the deny-list feed reads the log without being told of a change
   * (a change made by another process sharing the database); 0 turns it off.
   * Default 1000 ms; 10 s on PostgreSQL, where replicas hear of each other's
   * changes through LISTEN/NOTIFY.
   */
  denyListPollMs?: number;
  /** Silence after which a WatchDenyList stream gets an empty heartbeat (default 15 s). */
  denyListHeartbeatMs?: number;
  /** A WatchDenyList stream whose client takes nothing for this long is dropped (default 30 s). */
  denyListStallMs?: number;
  /**
   * mTLS with the issuer's certificate (identity
   * spiffe://tapcredit/issuer/<issuerId>): the server requires client
   * certificates and enforces issuer/policy.ts; calls to the authorizer
   * present it. Plaintext and no authorization when unset.
   */
  tls?: TlsConfig;
  /** Port of the HTTP /metrics listener (0 picks a free one); no listener when unset. */
  metricsPort?: number;
  /** Time between database probes of the health check (default 2000 ms). */
  healthProbeIntervalMs?: number;
  /** This replica's name in outbox claims (default: host/pid/random); replicas sharing a database must differ. */
  replicaId?: string;
  /** How long an outbox claim lasts before another replica may take it over (default 30 s). */
  claimTtlMs?: number;
  log?: Logger;
}

export interface IssuerHandle {
  address: string;
  port: number;
  /** host:port of the HTTP /metrics listener, when metricsPort was given. */
  metricsAddress?: string;
  db: Db;
  /** Stops taking calls, stops the debit worker, closes the database. */
  close(): Promise<void>;
}

export async function startIssuer(config: IssuerConfig): Promise<IssuerHandle> {
  const log = config.log ?? createLogger('issuer');
  if (config.tls) assertOwnIdentity(config.tls, 'issuer', config.issuerId);
  const db = await openDatabase({ url: config.databaseUrl, migrations, migrationsTable: MIGRATIONS_TABLE, log });
  const authorizer = authorizerClient(config.authorizerAddress, config.tls);
  const ctx: IssuerContext = {
    db,
    issuerId: config.issuerId,
    issuerCode: config.issuerCode,
    currencyCode: config.currencyCode,
    masterKey: config.masterKey,
    signingKey: config.signingKey,
    authorizer,
    now: () => new Date(),
    log,
    fareCap: config.fareCap,
    debtRetry: config.debtRetry,
    cloneClockSkewMs: config.cloneClockSkewMs,
    denyListFeed: new DenyListFeed({
      db,
      log,
      listenUrl: isPostgresUrl(config.databaseUrl) ? config.databaseUrl : undefined,
      pollMs: config.denyListPollMs,
      heartbeatMs: config.denyListHeartbeatMs,
      stallMs: config.denyListStallMs,
    }),
    leases: new Leases({ owner: config.replicaId, ttlMs: config.claimTtlMs }),
  };
  const feed = ctx.denyListFeed!;
  const debtWorker = new Worker(async () => (await debtStep(ctx)).more, {
    name: 'debt-retry',
    intervalMs: config.debtPollIntervalMs ?? 1000,
    log,
  });
  const batchSize = config.deductBatchSize ?? DEFAULT_DEDUCT_BATCH_SIZE;
  const deductWorkers = Array.from(
    { length: Math.max(1, config.deductConcurrency ?? 1) },
    (_, i) =>
      new Worker(() => deductStep(ctx, batchSize), {
        name: i === 0 ? 'deduct' : `deduct-${i + 1}`,
        intervalMs: config.deductIntervalMs ?? 200,
        windowMs: config.deductWindowMs,
        log,
      }),
  );

  let server;
  try {
    // The feed loads its window of recent changes before the first stream comes.
    await feed.start();
    server = await startServer({
      services: [
        {
          name: 'tapcredit.issuer.v1.IssuerService',
          // WatchDenyList writes each change's message encoded once for all its streams.
          definition: passEncodedResponses(IssuerServiceService),
          policy: issuerPolicy,
          implementation: issuerHandlers(ctx, log, () => deductWorkers.forEach((w) => w.kick()), feed),
        },
      ],
      host: config.host,
      port: config.port,
      tls: config.tls,
      metrics: issuerMetrics(db),
      metricsPort: config.metricsPort,
      // Health is NOT_SERVING while the database does not answer.
      readiness: { check: () => db.raw('select 1'), intervalMs: config.healthProbeIntervalMs },
      log,
    });
  } catch (err) {
    await feed.close();
    authorizer.close();
    await db.destroy();
    throw err;
  }
  // Taps left DEDUCTING by a crash are resent on the first step.
  for (const w of deductWorkers) w.start();
  debtWorker.start();


  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    metricsAddress: server.metricsAddress,
    db,
    close: () =>
      (closing ??= (async () => {
        // Watch streams never end on their own: end them first, or the server waits out its grace period.
        await feed.close();
        await server.close();
        await Promise.all(deductWorkers.map((w) => w.stop()));
        await debtWorker.stop();
        authorizer.close();
        await db.destroy();
      })()),
  };
}
