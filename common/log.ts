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

/** A JSON logger to stdout, or to destination (tests capture lines there), at LOG_LEVEL unless level is given. */
export function createLogger(name: string, destination?: DestinationStream, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  const options = {
    name,
    level,
    mixin: traceFields,
    redact: { paths: REDACTED_FIELDS.flatMap((f) => [f, `*.${f}`]), censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
