// Structured JSON logs (pino). Secrets and card keys are never passed here.
import { pino, type DestinationStream, type Logger } from 'pino';
import { currentSpan } from './trace.js';

export type { Logger };

/** Every line logged while a call or worker step runs names its trace and span. */
function traceFields(): Record<string, string> {
  const span = currentSpan();
  return span ? { trace_id: span.traceId, span_id: span.spanId } : {};
}

/**
 * Defense in depth: fields named like a secret or a rider's personal detail
 * are censored at the top level and one level down, should a log call ever
 * pass one (test/security/secrets.test.ts checks that none does).
 */
export const REDACTED_FIELDS = ['masterKey', 'signingKey', 'holderKey', 'cardKey', 'privateKey', 'tls', 'rider', 'holder', 'phoneNumber'];

/**
 * A JSON logger to stdout, or to destination (tests capture lines there), at
 * LOG_LEVEL unless level is given. Stdout is written asynchronously: lines
 * logged while a write is under way go out together in the next one (a
 * server logs a line per tap and hop, and a synchronous write per line cost
 * a tenth of its CPU under load); pino flushes what is pending when the
 * process exits. Only a SIGKILL can lose the last lines, never state: the
 * databases are the record, the logs the trail.
 */
export function createLogger(name: string, destination?: DestinationStream, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  const options = {
    name,
    level,
    mixin: traceFields,
    redact: { paths: REDACTED_FIELDS.flatMap((f) => [f, `*.${f}`]), censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options, pino.destination({ dest: 1, sync: false }));
}

/**
 * The same logger for the per-item trail (a line per tap and hop, under the
 * tap's own trace), without the redaction, whose wildcard paths more than
 * double the cost of a line. Trail lines carry ids and statuses only, which
 * callers name field by field (never an object from a request).
 */
export const trailLogger = (log: Logger): Logger => log.child({}, { redact: [] });
