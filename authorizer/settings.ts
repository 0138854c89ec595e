// The authorizer's settings: flag, environment variable, default and meaning
// of each. main.ts reads them, startAuthorizer takes its defaults from them,
// and docs/configuration.md is generated from them.
import { SERVER_PORTS, integer, optionalText, replicaSettings, serverSettings, text } from '../common/settings.js';
import { DEFAULT_MAX_DEBIT_MINOR_UNITS } from './deductions.js';
import { DEFAULT_SETTLE_DEADLINE_MS } from './issuers.js';
import { DEFAULT_SETTLEMENT_BATCH_SIZE } from './settlement.js';
import { DEFAULT_ACCESS_TOKEN_TTL_MS, DEFAULT_REFRESH_TOKEN_TTL_MS } from './sign-in.js';

export const AUTHORIZER_SETTINGS = {
  ...serverSettings('authorizer', 'AUTHORIZER', 'spiffe://tapcredit/authorizer/<authorizer id>'),
  ...replicaSettings(),
  authorizerId: text('authorizer-id', 'AUTHORIZER_ID', 'authorizer-1', 'This authorizer\'s id: the name in its certificate, sent with every settlement.'),
  issuerAddresses: text('issuer-addresses', 'ISSUER_ADDRESSES', `issuer-1=127.0.0.1:${SERVER_PORTS.issuer.grpc}`, 'Where each issuer listens: issuer-id=host:port, comma-separated; an address without "id=" is one more replica of the issuer before it.'),
  holderKeyFile: optionalText('holder-key-file', 'TAPCREDIT_HOLDER_KEY_FILE', 'Key (hex) of the keyed hashes that stand for holders\' names and phone numbers; replicas must share it. Created only by `npm run keys` (or `npm start`).', '<data dir>/keys/authorizer-holder.key'),
  holderKey: optionalText(undefined, 'TAPCREDIT_HOLDER_KEY', 'The holder key itself, in hex; wins over the file.'),
  maxDebitMinorUnits: integer('max-debit-minor-units', 'MAX_DEBIT_MINOR_UNITS', Number(DEFAULT_MAX_DEBIT_MINOR_UNITS), 'Largest single debit; larger ones are declined LIMIT_EXCEEDED.'),
  settlementBatchSize: integer('settlement-batch-size', 'SETTLEMENT_BATCH_SIZE', DEFAULT_SETTLEMENT_BATCH_SIZE, 'Most deductions per settlement.'),
  settlementIntervalMs: integer('settlement-interval-ms', 'SETTLEMENT_INTERVAL_MS', 200, 'Poll interval of the settlement worker when idle.'),
  settlementWindowMs: integer('settlement-window-ms', 'SETTLEMENT_WINDOW_MS', 100, 'How long after a debit the settlement worker waits for the debits of more Deduct calls to share one settlement.'),
  settlementConcurrency: integer('settlement-concurrency', 'SETTLEMENT_CONCURRENCY', 2, 'Settlement workers at once; each claims its own settlement, so sends overlap commits.'),
  riderCallsPerSecond: integer('rider-calls-per-second', 'RIDER_CALLS_PER_SECOND', 20, 'Calls one rider (by account: the access token\'s, or the one a sign-in names) may make per second; more answer RESOURCE_EXHAUSTED with RetryInfo. 0: no limit.'),
  opsCallsPerSecond: integer('ops-calls-per-second', 'OPS_CALLS_PER_SECOND', 0, 'Calls one operator certificate may make per second (0: no limit; set it in production, bulk provisioning and benchmarks need more than a person).'),
  accessTokenTtlMs: integer('access-token-ttl-ms', 'ACCESS_TOKEN_TTL_MS', DEFAULT_ACCESS_TOKEN_TTL_MS, 'Life of a rider\'s access token (the JWT the issuer verifies).'),
  refreshTokenTtlMs: integer('refresh-token-ttl-ms', 'REFRESH_TOKEN_TTL_MS', DEFAULT_REFRESH_TOKEN_TTL_MS, 'Life of a rider\'s refresh token; each refresh returns a new one.'),
  settleDeadlineMs: integer('settle-deadline-ms', 'SETTLE_DEADLINE_MS', DEFAULT_SETTLE_DEADLINE_MS, 'Deadline of each Settle call to an issuer.'),
};
