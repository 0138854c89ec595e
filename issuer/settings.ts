// The issuer's settings: flag, environment variable, default and meaning of
// each. main.ts reads them, startIssuer takes its defaults from them, and
// docs/configuration.md is generated from them.
import { SERVER_PORTS, integer, optionalText, replicaSettings, serverSettings, text } from '../common/settings.js';
import { DEFAULT_CLONE_CLOCK_SKEW_MS, DEFAULT_REPEAT_WINDOW_MS } from './context.js';
import { DEFAULT_DEBT_RETRY } from './debts.js';
import { DEFAULT_DEDUCT_BATCH_SIZE } from './deductions.js';
import { DEFAULT_JWKS_MAX_AGE_MS } from './rider-tokens.js';

export const ISSUER_SETTINGS = {
  ...serverSettings('issuer', 'ISSUER', 'spiffe://tapcredit/issuer/<issuer id>'),
  ...replicaSettings(),
  issuerId: text('issuer-id', 'ISSUER_ID', 'issuer-1', 'This issuer\'s id: the name in its certificate and in the authorizer\'s settlements.'),
  issuerCode: text('issuer-code', 'ISSUER_CODE', 'CITY1', 'Issuer code printed in this issuer\'s cards.'),
  currency: text('currency', 'CURRENCY', 'CNY', 'Currency of fares, ISO 4217.'),
  authorizerAddress: text('authorizer-address', 'AUTHORIZER_ADDRESS', `127.0.0.1:${SERVER_PORTS.authorizer.grpc}`, 'host:port of the credit authorizer; several comma-separated for its replicas (calls go round robin).'),
  masterKeyFile: optionalText('master-key-file', 'TAPCREDIT_MASTER_KEY_FILE', 'Card master key in hex (verifies card proofs). Created only by `npm run keys` (or `npm start`), never by the server.', '<data dir>/keys/master.key'),
  masterKey: optionalText(undefined, 'TAPCREDIT_MASTER_KEY', 'The card master key itself, in hex; wins over the file.'),
  signingKeyFile: optionalText('signing-key-file', 'TAPCREDIT_SIGNING_KEY_FILE', 'Ed25519 private key (PKCS#8 PEM) that signs credit flags.', '<data dir>/keys/issuer-signing.pem'),
  signingKey: optionalText(undefined, 'TAPCREDIT_SIGNING_KEY', 'The signing key itself, PKCS#8 PEM; wins over the file.'),
  deductBatchSize: integer('deduct-batch-size', 'DEDUCT_BATCH_SIZE', DEFAULT_DEDUCT_BATCH_SIZE, 'Taps per Deduct call to the authorizer.'),
  riderCallsPerSecond: integer('rider-calls-per-second', 'RIDER_CALLS_PER_SECOND', 20, 'Calls one rider (by account: the access token\'s, or the one a sign-in names) may make per second; more answer RESOURCE_EXHAUSTED with RetryInfo. 0: no limit.'),
  opsCallsPerSecond: integer('ops-calls-per-second', 'OPS_CALLS_PER_SECOND', 0, 'Calls one operator certificate may make per second (0: no limit; set it in production, bulk provisioning and benchmarks need more than a person).'),
  enrollmentsPerCardPerHour: integer('enrollments-per-card-per-hour', 'ENROLLMENTS_PER_CARD_PER_HOUR', 10, 'Enrollment attempts per card per hour. 0: no limit.'),
  jwksMaxAgeMs: integer('jwks-max-age-ms', 'JWKS_MAX_AGE_MS', DEFAULT_JWKS_MAX_AGE_MS, 'How long the authorizer\'s token keys (GetJwks) are cached; a retired key stops verifying riders\' tokens within this time. A token naming a new key fetches them at once.'),
  deductIntervalMs: integer('deduct-interval-ms', 'DEDUCT_INTERVAL_MS', 200, 'Poll interval of the debit worker when idle.'),
  deductWindowMs: integer('deduct-window-ms', 'DEDUCT_WINDOW_MS', 50, 'How long after taps are stored the debit worker waits for more to join the Deduct call (and its two commits).'),
  deductConcurrency: integer('deduct-concurrency', 'DEDUCT_CONCURRENCY', 2, 'Debit workers at once; each claims its own batch, so one\'s Deduct call overlaps another\'s commits.'),
  dailyCapMinorUnits: optionalText('daily-cap-minor-units', 'ISSUER_DAILY_CAP_MINOR_UNITS', 'Daily fare cap per card in minor units; unset or 0: no cap.', 'no cap'),
  serviceDayStart: text('service-day-start', 'ISSUER_SERVICE_DAY_START', '04:00', 'Local time at which the service day (of the cap and of reconciliation) starts.'),
  utcOffset: text('utc-offset', 'ISSUER_UTC_OFFSET', '+08:00', 'UTC offset of the service day\'s local time.'),
  debtRetryBaseMs: integer('debt-retry-base-ms', 'ISSUER_DEBT_RETRY_BASE_MS', DEFAULT_DEBT_RETRY.baseMs, 'First wait before a declined debit is retried; doubles per retry.'),
  debtRetryMaxMs: integer('debt-retry-max-ms', 'ISSUER_DEBT_RETRY_MAX_MS', DEFAULT_DEBT_RETRY.maxMs, 'Longest wait between debt retries.'),
  debtPollIntervalMs: integer('debt-poll-interval-ms', 'ISSUER_DEBT_POLL_INTERVAL_MS', 1000, 'How often the debt worker looks for debts due for a retry.'),
  enrollmentSweepIntervalMs: integer(
    'enrollment-sweep-interval-ms',
    'ISSUER_ENROLLMENT_SWEEP_INTERVAL_MS',
    30_000,
    'How often the issuer looks for enrollments abandoned past their claim (10 min) and revokes the agreements they left.',
  ),
  cloneClockSkewMs: integer('clone-clock-skew-ms', 'ISSUER_CLONE_CLOCK_SKEW_MS', DEFAULT_CLONE_CLOCK_SKEW_MS, 'Clock tolerance between terminals in the clone check.'),
  repeatWindowMs: integer('repeat-window-ms', 'ISSUER_REPEAT_WINDOW_MS', DEFAULT_REPEAT_WINDOW_MS, 'Two taps of one card at one terminal or line this close, the later one\'s card record showing the earlier never completed, are charged as one ride.'),
  denyListPollMs: integer(
    'deny-list-poll-ms',
    'ISSUER_DENY_LIST_POLL_MS',
    1000,
    'Fallback: how often the deny-list feed reads the log without being told of a change (one query per process, whatever the number of streams); 0 turns it off. On PostgreSQL, replicas tell each other of changes by LISTEN/NOTIFY.',
  ),
  denyListHeartbeatMs: integer('deny-list-heartbeat-ms', 'ISSUER_DENY_LIST_HEARTBEAT_MS', 15_000, 'Silence after which a WatchDenyList stream gets an empty heartbeat (no database work).'),
  denyListStallMs: integer('deny-list-stall-ms', 'ISSUER_DENY_LIST_STALL_MS', 30_000, 'A WatchDenyList stream whose client takes nothing for this long is dropped (RESOURCE_EXHAUSTED); the terminal resumes from its version.'),
};
