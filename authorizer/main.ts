// Runs the authorizer from flags / environment with local defaults.
import { join } from 'node:path';
import { DEFAULT_METRICS_PORTS, DEFAULT_PORTS, dataDir, intSetting, setting } from '../common/config.js';
import { ensureDevHolderKey, loadHolderKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { onShutdownSignal } from '../common/server.js';
import { splitAddresses } from '../common/rpc.js';
import { transportFromSettings } from '../common/tls.js';
import { parseIssuerAddresses } from './issuers.js';
import { startAuthorizer } from './service.js';

const log = createLogger('authorizer');
const host = setting('host', 'HOST', '127.0.0.1');
const issuers = parseIssuerAddresses(setting('issuer-addresses', 'ISSUER_ADDRESSES', `issuer-1=127.0.0.1:${DEFAULT_PORTS.issuer}`));
// mTLS with the authorizer's certificate; plaintext only with --insecure, on loopback.
const tls = transportFromSettings('authorizer', host, Object.values(issuers).flatMap(splitAddresses));

const shutdown = onShutdownSignal(log);
const authorizer = await startAuthorizer({
  authorizerId: setting('authorizer-id', 'AUTHORIZER_ID', 'authorizer-1'),
  databaseUrl: setting('database-url', 'AUTHORIZER_DATABASE_URL', join(dataDir(), 'authorizer.sqlite')),
  host,
  port: intSetting('port', 'AUTHORIZER_PORT', DEFAULT_PORTS.authorizer),
  metricsPort: intSetting('metrics-port', 'AUTHORIZER_METRICS_PORT', DEFAULT_METRICS_PORTS.authorizer),
  healthProbeIntervalMs: intSetting('health-probe-interval-ms', 'HEALTH_PROBE_INTERVAL_MS', 2000),
  // Replicas sharing one database: each names itself in its settlement claims.
  replicaId: setting('replica-id', 'REPLICA_ID', '') || undefined,
  claimTtlMs: intSetting('claim-ttl-ms', 'CLAIM_TTL_MS', 30_000),
  issuers,
  tls,
  // A development key is created on first run unless one is given.
  holderKey: loadHolderKey(process.env.TAPCREDIT_HOLDER_KEY ? undefined : (process.env.TAPCREDIT_HOLDER_KEY_FILE ?? ensureDevHolderKey(join(dataDir(), 'keys')))),
  maxDebitMinorUnits: intSetting('max-debit-minor-units', 'MAX_DEBIT_MINOR_UNITS', 100_000),
  settlementBatchSize: intSetting('settlement-batch-size', 'SETTLEMENT_BATCH_SIZE', 1000),
  settlementIntervalMs: intSetting('settlement-interval-ms', 'SETTLEMENT_INTERVAL_MS', 200),
  // Up to 100 ms for the debits of several Deduct calls to share one settlement.
  settlementWindowMs: intSetting('settlement-window-ms', 'SETTLEMENT_WINDOW_MS', 100),
  settlementConcurrency: intSetting('settlement-concurrency', 'SETTLEMENT_CONCURRENCY', 2),
  log,
});
log.info({ address: authorizer.address }, 'authorizer ready');
shutdown.started(authorizer.close);
