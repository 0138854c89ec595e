// Promise form of a generated grpc-js client call, always with a deadline
// and the caller's trace.
import type { CallOptions, Client, Metadata, ServiceError } from '@grpc/grpc-js';
import { outgoingMetadata } from './trace.js';

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, response: Res) => void,
) => unknown;

export const DEFAULT_DEADLINE_MS = 10_000;

/** Calls client[method](request) with a deadline and resolves the response or rejects with the ServiceError. */
export function callUnary<C extends Client, Req, Res>(
  client: C,
  method: (this: C, ...args: Parameters<UnaryMethod<Req, Res>>) => unknown,
  request: Req,
  deadlineMs = DEFAULT_DEADLINE_MS,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    // The current trace goes along (W3C traceparent), so the callee's logs join it.
    method.call(client, request, outgoingMetadata(), { deadline: Date.now() + deadlineMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** Codes on which a call may be retried with the same idempotency key. */
export const RETRYABLE_CODES = new Set([4 /* DEADLINE_EXCEEDED */, 14 /* UNAVAILABLE */, 8 /* RESOURCE_EXHAUSTED */]);
