// Starts the authorizer (common/runner.ts): its database, the
// AuthorizerService server and the settlement workers that pay debited fares
// out to the issuers. Defaults of what is left unset come from its settings
// table (settings.ts).
import { Leases } from '../common/leases.js';
import { createLogger, type Logger } from '../common/log.js';
import { rateLimits } from '../common/rate-limit.js';
import { runService, type RunningService } from '../common/runner.js';
import { assertOwnIdentity, type TlsConfig } from '../common/tls.js';
import { Worker } from '../common/worker.js';
import { AuthorizerServiceService } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { authorizerHandlers } from './handlers.js';
import { IssuerDirectory } from './issuers.js';
import { assertLedgerBalanced } from './ledger.js';
import { ephemeralHolderKey, hashClearHolders } from './holders.js';
import { authorizerMetrics } from './metrics.js';
import { MIGRATIONS_TABLE, migrations } from './migrations.js';
import { authorizerPolicy } from './policy.js';
import { AUTHORIZER_SETTINGS } from './settings.js';
import { settlementStep } from './settlement.js';

export interface AuthorizerConfig {
  /** This authorizer's id, sent with every settlement. */
  authorizerId: string;
  /** SQLite file path or postgres:// URL. */
  databaseUrl: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Where each issuer's IssuerService listens: issuer id -> host:port, or several comma-separated for its replicas. */
  issuers: Record<string, string>;
  /** Largest single debit, in minor units; larger ones are declined LIMIT_EXCEEDED. Every optional setting left unset takes its default from AUTHORIZER_SETTINGS (settings.ts). */
  maxDebitMinorUnits?: number;
  /** Most deductions per settlement. */
  settlementBatchSize?: number;
  /** Settlement worker poll interval when idle. */
  settlementIntervalMs?: number;
  /** Batching window of the settlement worker: how long after a debit it waits for more to join the settlement. */
  settlementWindowMs?: number;
  /** Settlement workers at once; each claims its own settlement (leases), so sends overlap commits. */
  settlementConcurrency?: number;
  /** Deadline of each Settle call. */
  settleDeadlineMs?: number;
  /**
   * Secret key of the keyed hashes that stand for account holders' names and
   * phone numbers (authorizer/holders.ts). Default: a random key for this
   * process only, fine for tests; main.ts always passes a persistent one.
   */
  holderKey?: Buffer;
  /**
   * mTLS with the authorizer's certificate (identity
   * spiffe://tapcredit/authorizer/<authorizerId>): the server requires client
   * certificates and enforces authorizer/policy.ts; settlements go only to a
   * server whose certificate names that issuer. Plaintext and no
   * authorization when unset.
   */
  tls?: TlsConfig;
  /** Calls a rider (by account, sign-ins included) may make per second (common/rate-limit.ts; 0: no limit). */
  riderCallsPerSecond?: number;
  /** Calls an operator may make per second (0: no limit). */
  opsCallsPerSecond?: number;
  /** Life of riders' access tokens (authorizer/sign-in.ts). */
  accessTokenTtlMs?: number;
  /** Life of riders' refresh tokens. */
  refreshTokenTtlMs?: number;
  /** Port of the HTTP /metrics listener (0 picks a free one); no listener when unset. */
  metricsPort?: number;
  /** Time between database probes of the health check. */
  healthProbeIntervalMs?: number;
  /** This replica's name in settlement claims (default: host/pid/random); replicas sharing a database must differ. */
  replicaId?: string;
  /** How long a settlement claim lasts before another replica may take it over. */
  claimTtlMs?: number;
  log?: Logger;
}

export interface AuthorizerHandle extends RunningService {
  /** Sets or changes where an issuer listens (e.g. an issuer started after the authorizer) and retries its settlements now. */
  setIssuerAddress(issuerId: string, address: string): void;
  /** Throws when the ledger breaks an invariant (every transfer sums to zero, balances = sums of entries, floors kept). */
  checkLedger(): Promise<void>;
}

export async function startAuthorizer(config: AuthorizerConfig): Promise<AuthorizerHandle> {
  const log = (config.log ?? createLogger('authorizer')).child({ authorizerId: config.authorizerId });
  if (config.tls) assertOwnIdentity(config.tls, 'authorizer', config.authorizerId);
  const defaults = AUTHORIZER_SETTINGS;
  let issuers: IssuerDirectory | undefined;
  let settlers: Worker[] = [];
  const service = await runService(
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
      const holderKey = config.holderKey ?? ephemeralHolderKey();
      const hashed = await hashClearHolders(db, holderKey);
      if (hashed > 0) log.info({ accounts: hashed }, 'replaced clear holder details with keyed hashes');
      const observed = authorizerMetrics(db);
      const directory = (issuers = new IssuerDirectory(config.authorizerId, config.issuers, config.settleDeadlineMs ?? defaults.settleDeadlineMs.default, config.tls));
      const leases = new Leases({ owner: config.replicaId, ttlMs: config.claimTtlMs ?? defaults.claimTtlMs.default });
      const batchSize = config.settlementBatchSize ?? defaults.settlementBatchSize.default;
      settlers = Array.from(
        { length: Math.max(1, config.settlementConcurrency ?? defaults.settlementConcurrency.default) },
        (_, i) =>
          new Worker(settlementStep({ db, send: directory.settle, batchSize, log, leases }), {
            name: i === 0 ? 'settlement' : `settlement-${i + 1}`,
            intervalMs: config.settlementIntervalMs ?? defaults.settlementIntervalMs.default,
            windowMs: config.settlementWindowMs ?? defaults.settlementWindowMs.default,
            log,
          }),
      );
      return {
        services: [
          {
            name: 'tapcredit.authorizer.v1.AuthorizerService',
            definition: AuthorizerServiceService,
            policy: { ...authorizerPolicy, limit: rateLimits({
                riderCallsPerSecond: config.riderCallsPerSecond ?? defaults.riderCallsPerSecond.default,
                opsCallsPerSecond: config.opsCallsPerSecond ?? defaults.opsCallsPerSecond.default,
              }),
            },
            implementation: authorizerHandlers({
              db,
              log,
              maxDebitMinorUnits: BigInt(config.maxDebitMinorUnits ?? defaults.maxDebitMinorUnits.default),
              onDeducted: () => settlers.forEach((s) => s.kick()),
              holderKey,
              signIn: {
                authorizerId: config.authorizerId,
                accessTokenTtlMs: config.accessTokenTtlMs ?? defaults.accessTokenTtlMs.default,
                refreshTokenTtlMs: config.refreshTokenTtlMs ?? defaults.refreshTokenTtlMs.default,
                knowsAudience: (issuerId) => directory.knows(issuerId),
              },
              onDebits: (items, outcomes) => observed.observeDebits(items, outcomes, log),
            }),
          },
        ],
        metrics: observed.metrics,
        workers: settlers,
        release: () => directory.close(),
      };
    },
  );
  return {
    ...service,
    setIssuerAddress(issuerId, address) {
      issuers!.setAddress(issuerId, address);
      for (const s of settlers) s.retryNow();
    },
    checkLedger: () => assertLedgerBalanced(service.db),
  };
}
