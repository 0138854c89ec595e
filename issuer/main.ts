// The issuer as a process: `node dist/issuer/main.js [flags]`. Every setting
// is a flag or an environment variable (settings.ts, docs/configuration.md).
import { loadMasterKey, loadSigningKey } from '../common/keys.js';
import { fileOr, runProcess, transportOf } from '../common/process.js';
import { splitAddresses } from '../common/rpc.js';
import { processSettings } from '../common/settings.js';
import { fareCapFromSettings } from './fares.js';
import { startIssuer } from './service.js';
import { ISSUER_SETTINGS } from './settings.js';

const s = processSettings('issuer', ISSUER_SETTINGS);
await runProcess('issuer', s.logLevel, (log) =>
  startIssuer({
    issuerId: s.issuerId,
    issuerCode: s.issuerCode,
    currencyCode: s.currency,
    databaseUrl: s.databaseUrl ?? fileOr(s, undefined, 'issuer.sqlite'),
    host: s.host,
    port: s.port,
    metricsPort: s.metricsPort,
    healthProbeIntervalMs: s.healthProbeIntervalMs,
    replicaId: s.replicaId,
    claimTtlMs: s.claimTtlMs,
    authorizerAddress: s.authorizerAddress,
    // mTLS with the issuer's certificate; plaintext only with --insecure, on loopback.
    tls: transportOf(s, 'issuer', splitAddresses(s.authorizerAddress)),
    // Keys are read, never created here: replicas must share one set.
    masterKey: loadMasterKey(fileOr(s, s.masterKeyFile, 'keys', 'master.key'), s.masterKey),
    signingKey: loadSigningKey(fileOr(s, s.signingKeyFile, 'keys', 'issuer-signing.pem'), s.signingKey),
    deductBatchSize: s.deductBatchSize,
    deductIntervalMs: s.deductIntervalMs,
    jwksMaxAgeMs: s.jwksMaxAgeMs,
    deductWindowMs: s.deductWindowMs,
    deductConcurrency: s.deductConcurrency,
    fareCap: fareCapFromSettings(s),
    debtRetry: { baseMs: s.debtRetryBaseMs, maxMs: s.debtRetryMaxMs },
    debtPollIntervalMs: s.debtPollIntervalMs,
    enrollmentSweepIntervalMs: s.enrollmentSweepIntervalMs,
    cloneClockSkewMs: s.cloneClockSkewMs,
    repeatWindowMs: s.repeatWindowMs,
    denyListPollMs: s.denyListPollMs,
    denyListHeartbeatMs: s.denyListHeartbeatMs,
    denyListStallMs: s.denyListStallMs,
    riderCallsPerSecond: s.riderCallsPerSecond,
    opsCallsPerSecond: s.opsCallsPerSecond,
    enrollmentsPerCardPerHour: s.enrollmentsPerCardPerHour,
    log,
  }),
);
