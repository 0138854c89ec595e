// Domain errors and their one mapping to gRPC status (AIP-193): a canonical
// code, a message, and google.rpc.Status details (ErrorInfo with a stable
// UPPER_SNAKE reason, BadRequest field violations) in grpc-status-details-bin.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { BadRequest, ErrorInfo, RetryInfo } from '../gen/google/rpc/error_details.js';
import { Status } from '../gen/google/rpc/status.js';
import { ERROR_REASONS, type ErrorReason } from './error-reasons.js';

export interface FieldViolation {
  field: string;
  description: string;
}

export class ApiError extends Error {
  constructor(
    readonly code: status,
    readonly reason: string,
    message: string,
    readonly metadata: Record<string, string> = {},
    readonly fieldViolations: FieldViolation[] = [],
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** When set, the status carries a google.rpc.RetryInfo with this delay (rate limits). */
  retryDelayMs?: number;
}

/** Violations named in an INVALID_ARGUMENT message; all of them (up to MAX_REPORTED_VIOLATIONS) are in its BadRequest. */
const VIOLATIONS_IN_MESSAGE = 10;

/** An error of the catalogue (error-reasons.ts): the reason decides the code. */
export const apiError = (reason: ErrorReason, message: string, metadata: Record<string, string> = {}) =>
  new ApiError(ERROR_REASONS[reason].code, reason, message, metadata);

export const invalidArgument = (violations: FieldViolation[], reason: 'INVALID_ARGUMENT' | 'MALFORMED_REQUEST' | 'TOTAL_MISMATCH' = 'INVALID_ARGUMENT') =>
  new ApiError(
    status.INVALID_ARGUMENT,
    reason,
    violations
      .slice(0, VIOLATIONS_IN_MESSAGE)
      .map((v) => `${v.field}: ${v.description}`)
      .join('; ') + (violations.length > VIOLATIONS_IN_MESSAGE ? `; and ${violations.length - VIOLATIONS_IN_MESSAGE} more` : ''),
    {},
    violations,
  );

/** The request id was used before with a different payload (AIP-155). */
export const requestIdReused = (field: string, id: string) =>
  apiError('REQUEST_ID_REUSED', `${field} ${JSON.stringify(id)} was already used with a different request`, {
    [field]: id,
  });

const ANY_PREFIX = 'type.googleapis.com/';

/**
 * Returns true for a database error that the same request, sent again,
 * should get past: a serialization failure or a deadlock (PostgreSQL, and the
 * distributed SQL stores that speak its protocol), a busy or locked SQLite
 * database. The transaction was rolled back whole.
 */
export function isTransientDatabaseError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === '40001' || code === '40P01' || code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

/**
 * Returns true for a write the database refused for want of space: SQLite's
 * SQLITE_FULL (a full disk, or a page count at max_page_count) and
 * PostgreSQL's disk_full (53100). Nothing of the transaction was kept.
 */
export function isStorageFullError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === 'SQLITE_FULL' || code === '53100';
}

/**
 * Returns true for a database connection that was lost or could not be made:
 * PostgreSQL's admin shutdown / crash shutdown / cannot connect now (57P01-03)
 * and connection exceptions (class 08), node-postgres's "Connection
 * terminated", and a refused or reset socket. Whether an in-flight COMMIT
 * took effect is unknown; the pool replaces the connection.
 */
export function isDatabaseUnavailableError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  if (/^57P0[123]$/.test(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return /Connection terminated|Client has encountered a connection error|terminating connection due to administrator command/.test(String(e?.message ?? ''));
}

// An error travels in HTTP/2 trailers (grpc-message, grpc-status-details-bin),
// which peers cap (Node at 64 KiB per header block; a block over the cap is
// dropped and the call hangs until its deadline). Requests may be large and
// messages may quote them, so every part of an error is bounded.
export const MAX_ERROR_MESSAGE = 1000;
export const MAX_REPORTED_VIOLATIONS = 50;
const MAX_METADATA_VALUE = 200;

const bounded = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

/**
 * Builds the gRPC error a handler returns. A transaction the database rolled
 * back for a concurrent update is ABORTED (the caller sends the same request
 * again: every mutation is idempotent by its id); a write refused for want
 * of space is UNAVAILABLE STORAGE_FULL (retryable); other unknown errors become
 * INTERNAL without leaking their text.
 */
export function toServiceError(err: unknown, domain: string): Partial<ServiceError> {
  const error =
    err instanceof ApiError
      ? err
      : isTransientDatabaseError(err)
        ? apiError('CONCURRENT_UPDATE', 'the request met a concurrent update and was rolled back; send it again')
        : isStorageFullError(err)
          ? apiError('STORAGE_FULL', 'the server\'s storage is full; nothing was changed; send the request again later')
          : isDatabaseUnavailableError(err)
            ? apiError('DATABASE_UNAVAILABLE', 'the server lost its database connection; send the request again with the same id')
            : apiError('INTERNAL', 'internal error; see server logs');
  const message = bounded(error.message, MAX_ERROR_MESSAGE);
  const info: Record<string, string> = {};
  for (const [key, value] of Object.entries(error.metadata)) info[bounded(key, MAX_METADATA_VALUE)] = bounded(value, MAX_METADATA_VALUE);
  const violations = error.fieldViolations;
  // Past the cap, the count tells a client how many there were.
  if (violations.length > MAX_REPORTED_VIOLATIONS) info.violation_count = String(violations.length);
  const details = [
    {
      typeUrl: ANY_PREFIX + 'google.rpc.ErrorInfo',
      value: Buffer.from(ErrorInfo.encode({ reason: error.reason, domain, metadata: info }).finish()),
    },
  ];
  if (violations.length > 0) {
    const fieldViolations = violations
      .slice(0, MAX_REPORTED_VIOLATIONS)
      .map((v) => ({ field: bounded(v.field, MAX_METADATA_VALUE), description: bounded(v.description, MAX_METADATA_VALUE) }));
    details.push({
      typeUrl: ANY_PREFIX + 'google.rpc.BadRequest',
      value: Buffer.from(BadRequest.encode({ fieldViolations }).finish()),
    });
  }
  if (error.retryDelayMs !== undefined) {
    const ms = Math.max(0, Math.ceil(error.retryDelayMs));
    details.push({
      typeUrl: ANY_PREFIX + 'google.rpc.RetryInfo',
      value: Buffer.from(RetryInfo.encode({ retryDelay: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 } }).finish()),
    });
  }
  const metadata = new Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from(Status.encode({ code: error.code, message, details }).finish()));
  return { code: error.code, details: message, metadata };
}

export interface DecodedErrorDetails {
  errorInfo?: ErrorInfo;
  badRequest?: BadRequest;
  retryInfo?: RetryInfo;
}

/** Reads ErrorInfo and BadRequest back from an error's grpc-status-details-bin (for clients and tests). */
export function decodeErrorDetails(err: ServiceError): DecodedErrorDetails {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (!raw) return {};
  const decoded: DecodedErrorDetails = {};
  for (const any of Status.decode(raw as Buffer).details) {
    if (any.typeUrl === ANY_PREFIX + 'google.rpc.ErrorInfo') decoded.errorInfo = ErrorInfo.decode(any.value);
    if (any.typeUrl === ANY_PREFIX + 'google.rpc.BadRequest') decoded.badRequest = BadRequest.decode(any.value);
    if (any.typeUrl === ANY_PREFIX + 'google.rpc.RetryInfo') decoded.retryInfo = RetryInfo.decode(any.value);
  }
  return decoded;
}
