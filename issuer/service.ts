// Starts the issuer (common/runner.ts): its database, the IssuerService gRPC
// server, the debit outbox workers that send RECEIVED taps to the credit
// authorizer, the debt retry worker, the abandoned-enrollment worker and the
// deny-list feed. Defaults of what is left unset come from its settings table
// (settings.ts).
import type { KeyObject } from 'node:crypto';
import { isPostgresUrl } from '../common/db.js';
import { Leases } from '../common/leases.js';
import { createLogger, type Logger } from '../common/log.js';
import { rateLimits } from '../common/rate-limit.js';
import { runService, type RunningService } from '../common/runner.js';
import { passEncodedResponses } from '../common/server-stream.js';
import { assertOwnIdentity, type TlsConfig } from '../common/tls.js';
import { Worker } from '../common/worker.js';
import { IssuerServiceService } from '../gen/tapcredit/issuer/v1/issuer.js';
import { authorizerClient } from './authorizer-client.js';
import type { IssuerContext } from './context.js';
import { debtStep, type DebtRetryConfig } from './debts.js';
import { deductStep } from './deductions.js';
import { DenyListFeed } from './deny-list-feed.js';
import { sweepAbandonedEnrollments } from './enrollment.js';
import type { FareCapConfig } from './fares.js';
import { issuerHandlers } from './handlers.js';
import { issuerMetrics } from './metrics.js';
import { MIGRATIONS_TABLE, migrations } from './migrations.js';
import { issuerPolicy } from './policy.js';
import { RiderTokenVerifier } from './rider-tokens.js';
import { ISSUER_SETTINGS } from './settings.js';

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
  /** Calls a rider may make per second (common/rate-limit.ts; 0: no limit). */
  riderCallsPerSecond?: number;
  /** Calls an operator may make per second (0: no limit). */
  opsCallsPerSecond?: number;
  /** Enrollment attempts per card per hour (0: no limit). */
  enrollmentsPerCardPerHour?: number;
  /** How long the authorizer's token keys are cached: a retired key stops verifying within this time. */
  jwksMaxAgeMs?: number;
  /** host:port of the credit authorizer; several comma-separated for its replicas (see common/rpc.ts channelTarget). */
  authorizerAddress: string;
  /** Card master key (verifies card proofs). */
  masterKey: Buffer;
  /** Ed25519 key that signs credit flags. */
  signingKey: KeyObject;
  /** Taps per Deduct call. Every optional setting left unset takes its default from ISSUER_SETTINGS (settings.ts). */
  deductBatchSize?: number;
  /** Poll interval of the debit worker when idle. */
  deductIntervalMs?: number;
  /** Batching window of the debit worker: how long after taps are stored it waits for more to join the Deduct batch. */
  deductWindowMs?: number;
  /**
   * Debit workers draining the outbox at once. Each claims its
   * own batch (leases, as replicas do), so one worker's Deduct call overlaps
   * another's commits instead of the database idling while it waits.
   */
  deductConcurrency?: number;
  /** Daily fare cap per card and the service-day boundary; no cap when unset. */
  fareCap?: FareCapConfig;
  /** Backoff of debt retries (base doubling per retry, at most max). */
  debtRetry?: DebtRetryConfig;
  /** How often the debt worker looks for debts due for a retry. */
  debtPollIntervalMs?: number;
  /** How often the enrollment worker looks for abandoned enrollments whose agreements it must revoke. */
  enrollmentSweepIntervalMs?: number;
  /** Clock tolerance between terminals for the clone check. */
  cloneClockSkewMs?: number;
  repeatWindowMs?: number;
  /**
   * How often the deny-list feed reads the log without being told of a change
   * (a change made by another process sharing the database); 0 turns it off.
   * On PostgreSQL replicas hear of each other's changes through LISTEN/NOTIFY,
   * so this is only a fallback there.
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
  /** Time between database probes of the health check. */
  healthProbeIntervalMs?: number;
  /** This replica's name in outbox claims (default: host/pid/random); replicas sharing a database must differ. */
  replicaId?: string;
  /** How long an outbox claim lasts before another replica may take it over. */
  claimTtlMs?: number;
  log?: Logger;
}

/** Stops taking calls, stops the debit workers, closes the database on close(). */
export type IssuerHandle = RunningService;

export async function startIssuer(config: IssuerConfig): Promise<IssuerHandle> {
  const log = config.log ?? createLogger('issuer');
  if (config.tls) assertOwnIdentity(config.tls, 'issuer', config.issuerId);
  const defaults = ISSUER_SETTINGS;
  return runService(
    {
      host: config.host,
      port: config.port,
      tls: config.tls,
      metricsPort: config.metricsPort,
      healthProbeIntervalMs: config.healthProbeIntervalMs ?? defaults.healthProbeIntervalMs.default,
      log,
      database: { url: config.databaseUrl, migrations, migrationsTable: MIGRATIONS_TABLE },
    },
    async (db) => {
      const authorizer = authorizerClient(config.authorizerAddress, config.tls);
      // Riders' access tokens are verified with the authorizer's published keys (issuer/rider-tokens.ts).
      const riderTokens = new RiderTokenVerifier({
        audience: config.issuerId,
        fetchKeys: () => authorizer.getJwks(),
        maxAgeMs: config.jwksMaxAgeMs ?? defaults.jwksMaxAgeMs.default,
      });
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
        repeatWindowMs: config.repeatWindowMs,
        denyListFeed: new DenyListFeed({
          db,
          log,
          listenUrl: isPostgresUrl(config.databaseUrl) ? config.databaseUrl : undefined,
          pollMs: config.denyListPollMs ?? defaults.denyListPollMs.default,
          heartbeatMs: config.denyListHeartbeatMs,
          stallMs: config.denyListStallMs,
        }),
        leases: new Leases({ owner: config.replicaId, ttlMs: config.claimTtlMs ?? defaults.claimTtlMs.default }),
      };
      const feed = ctx.denyListFeed!;
      // The feed loads its window of recent changes before the first stream comes.
      await feed.start();
      const batchSize = config.deductBatchSize ?? defaults.deductBatchSize.default;
      // Taps left DEDUCTING by a crash are resent on the first step.
      const deductWorkers = Array.from(
        { length: Math.max(1, config.deductConcurrency ?? defaults.deductConcurrency.default) },
        (_, i) =>
          new Worker(() => deductStep(ctx, batchSize), {
            name: i === 0 ? 'deduct' : `deduct-${i + 1}`,
            intervalMs: config.deductIntervalMs ?? defaults.deductIntervalMs.default,
            windowMs: config.deductWindowMs ?? defaults.deductWindowMs.default,
            log,
          }),
      );
      const debtWorker = new Worker(async () => (await debtStep(ctx)).more, {
        name: 'debt-retry',
        intervalMs: config.debtPollIntervalMs ?? defaults.debtPollIntervalMs.default,
        log,
      });
      // Revokes the agreements of enrollments that never completed; rarely has work.
      const enrollmentWorker = new Worker(async () => (await sweepAbandonedEnrollments(ctx)) > 0, {
        name: 'enrollment-sweep',
        intervalMs: config.enrollmentSweepIntervalMs ?? defaults.enrollmentSweepIntervalMs.default,
        log,
      });
      return {
        services: [
          {
            name: 'tapcredit.issuer.v1.IssuerService',
            // WatchDenyList writes each change's message encoded once for all its streams.
            definition: passEncodedResponses(IssuerServiceService),
            policy: {
              ...issuerPolicy,
              verifyRider: async (token: string) => (await riderTokens.verify(token)).accountId,
              limit: rateLimits({
                riderCallsPerSecond: config.riderCallsPerSecond ?? defaults.riderCallsPerSecond.default,
                opsCallsPerSecond: config.opsCallsPerSecond ?? defaults.opsCallsPerSecond.default,
                enrollmentsPerCardPerHour: config.enrollmentsPerCardPerHour ?? defaults.enrollmentsPerCardPerHour.default,
              }),
            },
            implementation: issuerHandlers(ctx, log, () => deductWorkers.forEach((w) => w.kick()), feed),
          },
        ],
        metrics: issuerMetrics(db),
        workers: [...deductWorkers, debtWorker, enrollmentWorker],
        // Watch streams never end on their own: end them first, or the server waits out its grace period.
        streams: [{ start: () => undefined, stop: () => feed.close() }],
        release: async () => {
          await feed.close();
          authorizer.close();
        },
      };
    },
  );
}
