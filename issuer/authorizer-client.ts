// The issuer's side of the issuer -> authorizer hop: the generated client,
// a deadline on every call, and the authorizer's errors turned into ApiErrors
// so the issuer's handlers pass them on with the same code and reason.
import { status, type ServiceError } from '@grpc/grpc-js';
import { ApiError, apiError, decodeErrorDetails } from '../common/errors.js';
import { callUnary, channelTarget } from '../common/rpc.js';
import { channelCredentials, type TlsConfig } from '../common/tls.js';
import {
  AuthorizerServiceClient,
  DeductDeclineReason,
  DeductStatus,
  deductDeclineReasonToJSON,
  type DeductItem,
  type DeductResult,
} from '../gen/tapcredit/authorizer/v1/authorizer.js';
import type { AuthorizerPort } from './context.js';
import type { PublishedKeys } from './rider-tokens.js';

export const ENROLL_DEADLINE_MS = 5_000;
export const DEDUCT_DEADLINE_MS = 10_000;

function fromServiceError(err: unknown, address: string): unknown {
  const e = err as ServiceError;
  if (typeof e?.code !== 'number') return err;
  if (e.code === status.UNAVAILABLE || e.code === status.DEADLINE_EXCEEDED) {
    return apiError('AUTHORIZER_UNAVAILABLE', `the credit authorizer did not answer (${status[e.code]}); retry later`, {
      authorizer: address,
    });
  }
  const { errorInfo, badRequest } = decodeErrorDetails(e);
  if (!errorInfo) return err; // not an answer of the authorizer's API: INTERNAL, details in the log
  return new ApiError(e.code, errorInfo.reason, e.details, errorInfo.metadata, badRequest?.fieldViolations ?? []);
}

/** With tls, calls go over mTLS and only to a server whose certificate names a credit authorizer. */
export function authorizerClient(address: string, tls?: TlsConfig): AuthorizerPort & { getJwks(): Promise<PublishedKeys>; close(): void } {
  // address may list several replicas: calls go round robin over them.
  const { target, options } = channelTarget(address);
  const client = new AuthorizerServiceClient(target, channelCredentials(tls, { role: 'authorizer' }), options);
  return {
    authorizeEnrollment: (request) =>
      callUnary(client, client.authorizeEnrollment, request, ENROLL_DEADLINE_MS).catch((err) => {
        throw fromServiceError(err, address);
      }),
    deduct: (request) =>
      callUnary(client, client.deduct, request, DEDUCT_DEADLINE_MS).catch((err) => {
        throw fromServiceError(err, address);
      }),
    revokeAgreement: (request) =>
      callUnary(client, client.revokeAgreement, request, ENROLL_DEADLINE_MS).catch((err) => {
        throw fromServiceError(err, address);
      }),
    getJwks: () =>
      callUnary(client, client.getJwks, {}, ENROLL_DEADLINE_MS).catch((err) => {
        throw fromServiceError(err, address);
      }),
    close: () => client.close(),
  };
}

/** "DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS" -> "INSUFFICIENT_FUNDS". */
export const declineReasonName = (reason: DeductDeclineReason) =>
  deductDeclineReasonToJSON(reason).replace(/^DEDUCT_DECLINE_REASON_/, '');

/** Refuses an answer that does not give one well-formed result per item, in order (nothing is stored then). */
export function checkResults(items: DeductItem[], results: DeductResult[]): void {
  if (results.length !== items.length) {
    throw new Error(`Deduct answered ${results.length} results for ${items.length} items`);
  }
  results.forEach((r, i) => {
    if (r.requestId !== items[i].requestId) throw new Error(`Deduct result ${i} is for ${r.requestId}, expected ${items[i].requestId}`);
    if (r.status === DeductStatus.DEDUCT_STATUS_DEBITED && !r.deductionId) throw new Error(`Deduct result ${i} is DEBITED without a deduction id`);
    if (r.status === DeductStatus.DEDUCT_STATUS_DECLINED && r.declineReason === DeductDeclineReason.DEDUCT_DECLINE_REASON_UNSPECIFIED) {
      throw new Error(`Deduct result ${i} is DECLINED without a reason`);
    }
    if (![DeductStatus.DEDUCT_STATUS_DEBITED, DeductStatus.DEDUCT_STATUS_DECLINED, DeductStatus.DEDUCT_STATUS_REJECTED].includes(r.status)) {
      throw new Error(`Deduct result ${i} has status ${r.status}`);
    }
  });
}
