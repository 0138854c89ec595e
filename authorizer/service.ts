// Starts the authorizer: its database, the AuthorizerService server and the
// settlement worker that pays debited fares out to the issuers.
import { openDatabase, type Db } from '../common/db.js';
import { Leases } from '../common/leases.js';
import { createLogger, type Logger } from '../common/log.js';
import { startServer } from '../common/server.js';
import { assertOwnIdentity, type TlsConfig } from '../common/tls.js';
import { Worker } from '../common/worker.js';
import { AuthorizerServiceService } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { DEFAULT_MAX_DEBIT_MINOR_UNITS } from './deductions.js';
import { authorizerHandlers } from './handlers.js';
import { IssuerDirectory } from './issuers.js';
import { assertLedgerBalanced } from './ledger.js';
import { ephemeralHolderKey, hashClearHolders } from './holders.js';
import { authorizerMetrics } from './metrics.js';
import { MIGRATIONS_TABLE, migrations } from './migrations.js';
import { authorizerPolicy } from './policy.js';
import { DEFAULT_SETTLEMENT_BATCH_SIZE, settlementStep } from './settlement.js';

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
  /** Largest single debit, in minor units; larger ones are declined LIMIT_EXCEEDED. Default 100000. */
  maxDebitMinorUnits?: number;
  /** Most deductions per settlement. Default 1000. */
  settlementBatchSize?: number;
  /** Settlement worker poll interval when idle. Default 200 ms. */
  settlementIntervalMs?: number;
  /** Batching window of the settlement worker: how long after a debit it waits for more to join the settlement. Default 0. */
  settlementWindowMs?: number;
  /** Settlement workers at once (default 1); each claims its own settlement (leases), so sends overlap commits. */
  settlementConcurrency?: number;
  /** Deadline of each Settle call. Default 10 s. */
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
  /** Port of the HTTP /metrics listener (0 picks a free one); no listener when unset. */
  metricsPort?: number;
  /** Time between database probes of the health check (default 2000 ms). */
  healthProbeIntervalMs?: number;
  /** This replica's name in settlement claims (default: host/pid/random); replicas sharing a database must differ. */
  replicaId?: string;
  /** How long a settlement claim lasts before another replica may take it over (default 30 s). */
  claimTtlMs?: number;
  log?: Logger;
}

export interface AuthorizerHandle {
  /** host:port the authorizer listens on. */
  address: string;
  port: number;
  /** host:port of the HTTP /metrics listener, when metricsPort was given. */
  metricsAddress?: string;
  db: Db;
  /** Sets or changes where an issuer listens (e.g. an issuer started after the authorizer) and retries its settlements now. */
  setIssuerAddress(issuerId: string, address: string): void;
  /** Throws when the ledger breaks an invariant (every transfer sums to zero, balances = sums of entries, floors kept). */
  checkLedger(): Promise<void>;
  /** Stops taking calls, lets in-flight calls finish, stops the settlement worker and closes the database. */
  close(): Promise<void>;
}

export async function startAuthorizer(config: AuthorizerConfig): Promise<AuthorizerHandle> {
  const log = (config.log ?? createLogger('authorizer')).child({ authorizerId: config.authorizerId });
  if (config.tls) assertOwnIdentity(config.tls, 'authorizer', config.authorizerId);
  const db = await openDatabase({ url: config.databaseUrl, migrations, migrationsTable: MIGRATIONS_TABLE, log });
  const holderKey = config.holderKey ?? ephemeralHolderKey();
  const hashed = await hashClearHolders(db, holderKey).catch(async (err) => {
    await db.destroy();
    throw err;
  });
  if (hashed > 0) log.info({ accounts: hashed }, 'replaced clear holder details with keyed hashes');
  const observed = authorizerMetrics(db);
  const issuers = new IssuerDirectory(config.authorizerId, config.issuers, config.settleDeadlineMs, config.tls);
  const leases = new Leases({ owner: config.replicaId, ttlMs: config.claimTtlMs });
  const settlers = Array.from(
    { length: Math.max(1, config.settlementConcurrency ?? 1) },
    (_, i) =>
      new Worker(settlementStep({ db, send: issuers.settle, batchSize: config.settlementBatchSize ?? DEFAULT_SETTLEMENT_BATCH_SIZE, log, leases }), {
        name: i === 0 ? 'settlement' : `settlement-${i + 1}`,
        intervalMs: config.settlementIntervalMs ?? 200,
        windowMs: config.settlementWindowMs,
        log,
      }),
  );

  let server;
  try {
    server = await startServer({
      services: [
        {
          name: 'tapcredit.authorizer.v1.AuthorizerService',
          definition: AuthorizerServiceService,
          policy: authorizerPolicy,
          implementation: authorizerHandlers({
            db,
            log,
            maxDebitMinorUnits: BigInt(config.maxDebitMinorUnits ?? DEFAULT_MAX_DEBIT_MINOR_UNITS),
            onDeducted: () => settlers.forEach((s) => s.kick()),
            holderKey,
            onDebits: (items, outcomes) => observed.observeDebits(items, outcomes, log),
          }),
        },
      ],
      host: config.host,
      port: config.port,
      tls: config.tls,
      metrics: observed.metrics,
      metricsPort: config.metricsPort,
      // Health is NOT_SERVING while the database does not answer.
      readiness: { check: () => db.raw('select 1'), intervalMs: config.healthProbeIntervalMs },
      log,
    });
  } catch (err) {
    await db.destroy();
    throw err;
  }
  for (const s of settlers) s.start();

  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    metricsAddress: server.metricsAddress,
    db,
    setIssuerAddress(issuerId, address) {
      issuers.setAddress(issuerId, address);
      for (const s of settlers) s.retryNow();
    },
    checkLedger: () => assertLedgerBalanced(db),
    close() {
      closing ??= (async () => {
        await server.close();
        await Promise.all(settlers.map((s) => s.stop()));
        issuers.close();
        await db.destroy();
      })();
      return closing;
    },
  };
}
