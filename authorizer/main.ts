// The authorizer as a process: `node dist/authorizer/main.js [flags]`. Every
// setting is a flag or an environment variable (settings.ts,
// docs/configuration.md).
import { loadHolderKey } from '../common/keys.js';
import { fileOr, runProcess, transportOf } from '../common/process.js';
import { splitAddresses } from '../common/rpc.js';
import { processSettings } from '../common/settings.js';
import { parseIssuerAddresses } from './issuers.js';
import { startAuthorizer } from './service.js';
import { AUTHORIZER_SETTINGS } from './settings.js';

const s = processSettings('authorizer', AUTHORIZER_SETTINGS);
await runProcess('authorizer', s.logLevel, (log) => {
  const issuers = parseIssuerAddresses(s.issuerAddresses);
  return startAuthorizer({
    authorizerId: s.authorizerId,
    databaseUrl: s.databaseUrl ?? fileOr(s, undefined, 'authorizer.sqlite'),
    host: s.host,
    port: s.port,
    metricsPort: s.metricsPort,
    healthProbeIntervalMs: s.healthProbeIntervalMs,
    replicaId: s.replicaId,
    claimTtlMs: s.claimTtlMs,
    issuers,
    // mTLS with the authorizer's certificate; plaintext only with --insecure, on loopback.
    tls: transportOf(s, 'authorizer', Object.values(issuers).flatMap(splitAddresses)),
    // Read, never created here: replicas must share it.
    holderKey: loadHolderKey(fileOr(s, s.holderKeyFile, 'keys', 'authorizer-holder.key'), s.holderKey),
    maxDebitMinorUnits: s.maxDebitMinorUnits,
    settlementBatchSize: s.settlementBatchSize,
    settlementIntervalMs: s.settlementIntervalMs,
    settlementWindowMs: s.settlementWindowMs,
    settlementConcurrency: s.settlementConcurrency,
    settleDeadlineMs: s.settleDeadlineMs,
    accessTokenTtlMs: s.accessTokenTtlMs,
    refreshTokenTtlMs: s.refreshTokenTtlMs,
    riderCallsPerSecond: s.riderCallsPerSecond,
    opsCallsPerSecond: s.opsCallsPerSecond,
    log,
  });
});
