// Runs the issuer from flags / environment with local defaults.
import { join } from 'node:path';
import { DEFAULT_METRICS_PORTS, DEFAULT_PORTS, dataDir, intSetting, setting } from '../common/config.js';
import { ensureDevKeys, loadMasterKey, loadSigningKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { onShutdownSignal } from '../common/server.js';
import { splitAddresses } from '../common/rpc.js';
import { transportFromSettings } from '../common/tls.js';
import { fareCapFromSettings } from './fares.js';
import { startIssuer } from './service.js';

const log = createLogger('issuer');
const dir = dataDir();

// Development keys are created on first run unless key files are given.
const needDevKeys = !process.env.TAPCREDIT_MASTER_KEY_FILE || !process.env.TAPCREDIT_SIGNING_KEY_FILE;
const devKeys = needDevKeys ? ensureDevKeys(join(dir, 'keys')) : undefined;

const host = setting('host', 'HOST', '127.0.0.1');
const authorizerAddress = setting('authorizer-address', 'AUTHORIZER_ADDRESS', `127.0.0.1:${DEFAULT_PORTS.authorizer}`);
// mTLS with the issuer's certificate; plaintext only with --insecure, on loopback.
const tls = transportFromSettings('issuer', host, splitAddresses(authorizerAddress));

const shutdown = onShutdownSignal(log);
const issuer = await startIssuer({
  issuerId: setting('issuer-id', 'ISSUER_ID', 'issuer-1'),
  issuerCode: setting('issuer-code', 'ISSUER_CODE', 'CITY1'),
  currencyCode: setting('currency', 'CURRENCY', 'CNY'),
  databaseUrl: setting('database-url', 'ISSUER_DATABASE_URL', join(dir, 'issuer.sqlite')),
  host,
  port: intSetting('port', 'ISSUER_PORT', DEFAULT_PORTS.issuer),
  metricsPort: intSetting('metrics-port', 'ISSUER_METRICS_PORT', DEFAULT_METRICS_PORTS.issuer),
  healthProbeIntervalMs: intSetting('health-probe-interval-ms', 'HEALTH_PROBE_INTERVAL_MS', 2000),
  // Replicas sharing one database: each names itself in its outbox claims.
  replicaId: setting('replica-id', 'REPLICA_ID', '') || undefined,
  claimTtlMs: intSetting('claim-ttl-ms', 'CLAIM_TTL_MS', 30_000),
  authorizerAddress,
  tls,
  masterKey: loadMasterKey(process.env.TAPCREDIT_MASTER_KEY_FILE ?? devKeys!.masterKeyFile),
  signingKey: loadSigningKey(process.env.TAPCREDIT_SIGNING_KEY_FILE ?? devKeys!.signingKeyFile),
  deductBatchSize: intSetting('deduct-batch-size', 'DEDUCT_BATCH_SIZE', 1000),
  deductIntervalMs: intSetting('deduct-interval-ms', 'DEDUCT_INTERVAL_MS', 200),
  // Up to 50 ms for the taps of several reports to share one Deduct call (and its two commits).
  deductWindowMs: intSetting('deduct-window-ms', 'DEDUCT_WINDOW_MS', 50),
  deductConcurrency: intSetting('deduct-concurrency', 'DEDUCT_CONCURRENCY', 2),
  fareCap: fareCapFromSettings(),
  debtRetry: {
    baseMs: intSetting('debt-retry-base-ms', 'ISSUER_DEBT_RETRY_BASE_MS', 60 * 60_000),
    maxMs: intSetting('debt-retry-max-ms', 'ISSUER_DEBT_RETRY_MAX_MS', 24 * 60 * 60_000),
  },
  debtPollIntervalMs: intSetting('debt-poll-interval-ms', 'ISSUER_DEBT_POLL_INTERVAL_MS', 1000),
  cloneClockSkewMs: intSetting('clone-clock-skew-ms', 'ISSUER_CLONE_CLOCK_SKEW_MS', 60_000),
  log,
});
log.info({ address: issuer.address }, 'issuer ready');
shutdown.started(issuer.close);
