// Domain errors and their one mapping to gRPC status (AIP-193): a canonical
// code, a message, and google.rpc.Status details (ErrorInfo with a stable
// UPPER_SNAKE reason, BadRequest field violations) in grpc-status-details-bin.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { BadRequest, ErrorInfo } from '../gen/google/rpc/error_details.js';
import { Status } from '../gen/google/rpc/status.js';

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
}

export const invalidArgument = (violations: FieldViolation[], reason = 'INVALID_ARGUMENT') =>
  new ApiError(
    status.INVALID_ARGUMENT,
    reason,
    violations.map((v) => `${v.field}: ${v.description}`).join('; '),
    {},
    violations,
  );

export const notFound = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new ApiError(status.NOT_FOUND, reason, message, metadata);

export const alreadyExists = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new ApiError(status.ALREADY_EXISTS, reason, message, metadata);

export const failedPrecondition = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new ApiError(status.FAILED_PRECONDITION, reason, message, metadata);

export const unavailable = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new ApiError(status.UNAVAILABLE, reason, message, metadata);

/** The request id was used before with a different payload (AIP-155). */
export const requestIdReused = (field: string, id: string) =>
  alreadyExists('REQUEST_ID_REUSED', `${field} ${JSON.stringify(id)} was already used with a different request`, {
    [field]: id,
  });

const ANY_PREFIX = 'type.googleapis.com/';

/** Builds the gRPC error a handler returns; unknown errors become INTERNAL without leaking their text. */
export function toServiceError(err: unknown, domain: string): Partial<ServiceError> {
  const apiError =
    err instanceof ApiError ? err : new ApiError(status.INTERNAL, 'INTERNAL', 'internal error; see server logs');
  const details = [
    {
      typeUrl: ANY_PREFIX + 'google.rpc.ErrorInfo',
      value: Buffer.from(ErrorInfo.encode({ reason: apiError.reason, domain, metadata: apiError.metadata }).finish()),
    },
  ];
  if (apiError.fieldViolations.length > 0) {
    details.push({
      typeUrl: ANY_PREFIX + 'google.rpc.BadRequest',
      value: Buffer.from(BadRequest.encode({ fieldViolations: apiError.fieldViolations }).finish()),
    });
  }
  const metadata = new Metadata();
  metadata.set(
    'grpc-status-details-bin',
    Buffer.from(Status.encode({ code: apiError.code, message: apiError.message, details }).finish()),
  );
  return { code: apiError.code, details: apiError.message, metadata };
}

export interface DecodedErrorDetails {
  errorInfo?: ErrorInfo;
  badRequest?: BadRequest;
}

/** Reads ErrorInfo and BadRequest back from an error's grpc-status-details-bin (for clients and tests). */
export function decodeErrorDetails(err: ServiceError): DecodedErrorDetails {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (!raw) return {};
  const decoded: DecodedErrorDetails = {};
  for (const any of Status.decode(raw as Buffer).details) {
    if (any.typeUrl === ANY_PREFIX + 'google.rpc.ErrorInfo') decoded.errorInfo = ErrorInfo.decode(any.value);
    if (any.typeUrl === ANY_PREFIX + 'google.rpc.BadRequest') decoded.badRequest = BadRequest.decode(any.value);
  }
  return decoded;
}
