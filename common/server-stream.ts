// Server-streaming helpers for fan-out: writing bytes encoded once to many
// streams, and dropping a stream whose client stopped reading.
import { constants as http2 } from 'node:http2';
import type { ServerWritableStream, ServiceDefinition } from '@grpc/grpc-js';

/**
 * The definition with the response serializer of every server-streaming
 * method passing a Buffer through as already-encoded message bytes (a
 * generated message object is never a Buffer), so a handler can encode a
 * message once and write the same bytes to many streams.
 */
export function passEncodedResponses(definition: ServiceDefinition): ServiceDefinition {
  const out: Record<string, ServiceDefinition[string]> = {};
  for (const [name, method] of Object.entries(definition)) {
    out[name] = method.responseStream
      ? { ...method, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : method.responseSerialize(value)) }
      : method;
  }
  return out as ServiceDefinition;
}

/**
 * Writes encoded message bytes to a stream of a definition made by
 * passEncodedResponses, counting the bytes not yet taken by HTTP/2 (grpc-js
 * buffers whole messages however large): write() says false once more than
 * highWaterBytes wait, and onDrain() calls back when they are down to half.
 */
export function encodedWriter(call: ServerWritableStream<unknown, unknown>, highWaterBytes: number) {
  let queued = 0;
  let waiting: (() => void) | undefined;
  return {
    write(bytes: Buffer): boolean {
      queued += bytes.length;
      call.write(bytes, () => {
        queued -= bytes.length;
        if (waiting && queued <= highWaterBytes / 2) {
          const fn = waiting;
          waiting = undefined;
          fn();
        }
      });
      return queued <= highWaterBytes;
    },
    onDrain(fn: () => void): void {
      if (queued <= highWaterBytes / 2) queueMicrotask(fn);
      else waiting = fn;
    },
  };
}

/**
 * Ends a call at once with RST_STREAM ENHANCE_YOUR_CALM, which a gRPC client
 * reports as RESOURCE_EXHAUSTED. A status in trailers would queue behind the
 * data the client is not reading, and keep it in memory; a reset is sent
 * ahead of it and frees it. grpc-js offers no public way to reset a call:
 * this walks its interceptor chain to the HTTP/2 stream (checked by
 * test/issuer/deny-list-fanout.test.ts). Returns false when it found none and
 * ended the call with the status instead.
 */
export function resetServerStream(call: ServerWritableStream<unknown, unknown>, details: string): boolean {
  let inner = (call as unknown as { call?: Record<string, unknown> }).call;
  for (let depth = 0; inner && depth < 16; depth++) {
    const stream = inner.stream as { close?: (code: number) => void; closed?: boolean } | undefined;
    if (stream && typeof stream.close === 'function') {
      if (!stream.closed) stream.close(http2.NGHTTP2_ENHANCE_YOUR_CALM);
      return true;
    }
    inner = inner.nextCall as Record<string, unknown> | undefined;
  }
  call.emit('error', { code: 8, details, metadata: undefined });
  return false;
}
