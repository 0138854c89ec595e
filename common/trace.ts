// W3C Trace Context (https://www.w3.org/TR/trace-context/) carried in gRPC
// metadata as `traceparent`, held per call in AsyncLocalStorage so that every
// log line and every outgoing call made on behalf of a request names its
// trace. Hand-rolled rather than OpenTelemetry: with no collector here the
// only consumer is the logs, and the OTel SDK (api + core + sdk-trace-base +
// a context manager) is a lot of machinery for two random ids and one header.
// The header is the standard one, so an OTel SDK can take over later.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';

export const TRACEPARENT = 'traceparent';

export interface SpanContext {
  /** 32 lowercase hex digits, not all zero. */
  traceId: string;
  /** 16 lowercase hex digits, not all zero: this hop's span. */
  spanId: string;
  /** The caller's span, when the trace came in with the call. */
  parentSpanId?: string;
  /** trace-flags; bit 0 = sampled. */
  flags: number;
}

const HEADER = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** Parses a traceparent header; undefined when absent or malformed (then a new trace starts, as the spec says). */
export function parseTraceparent(header: unknown): SpanContext | undefined {
  if (typeof header !== 'string') return undefined;
  const m = HEADER.exec(header.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  // Version ff is forbidden; version 00 has exactly four fields.
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, flags: parseInt(flags, 16) };
}

export const formatTraceparent = (ctx: SpanContext) => `00-${ctx.traceId}-${ctx.spanId}-${ctx.flags.toString(16).padStart(2, '0')}`;

function nonZeroHex(bytes: number): string {
  for (;;) {
    const hex = randomBytes(bytes).toString('hex');
    if (!/^0+$/.test(hex)) return hex;
  }
}

/** A new trace (sampled), or a child span of parent in parent's trace. */
export function newSpan(parent?: SpanContext): SpanContext {
  if (!parent) return { traceId: nonZeroHex(16), spanId: nonZeroHex(8), flags: 1 };
  return { traceId: parent.traceId, spanId: nonZeroHex(8), parentSpanId: parent.spanId, flags: parent.flags };
}

const storage = new AsyncLocalStorage<SpanContext>();

/** The span the current call or worker step runs in. */
export const currentSpan = (): SpanContext | undefined => storage.getStore();

/** Runs fn inside span: its logs and outgoing calls carry the span's trace. */
export const runInSpan = <T>(span: SpanContext, fn: () => T): T => storage.run(span, fn);

/**
 * The server side of a hop: continues the caller's trace from the call's
 * metadata, or starts one when the caller sent none.
 */
export function serverSpan(metadata: Metadata | undefined): SpanContext {
  return newSpan(parseTraceparent(metadata?.get(TRACEPARENT)[0]));
}

/** Metadata for an outgoing call: a child of the current span, or of a new trace when there is none. */
export function outgoingMetadata(): Metadata {
  const md = new Metadata();
  md.set(TRACEPARENT, formatTraceparent(newSpan(currentSpan() ?? newSpan())));
  return md;
}

/** The traceparent of the current span, to store with an item that is sent on later (an outbox row). */
export const currentTraceparent = (): string => {
  const span = currentSpan();
  return span ? formatTraceparent(span) : '';
};

/**
 * Log fields naming the trace of one item of a batch (a tap, a debit): the
 * item carries the traceparent of the call that created it, so one tap can be
 * followed by its own trace id through batches that mix many taps.
 */
export function itemTraceFields(traceparent: string | undefined): { trace_id?: string; parent_span_id?: string } {
  const ctx = parseTraceparent(traceparent);
  return ctx ? { trace_id: ctx.traceId, parent_span_id: ctx.spanId } : {};
}

/**
 * Runs a batch send in the trace of the batch's first item, so a batch of
 * one (the common case when traffic is light) is one unbroken trace from the
 * gate to the settlement; the other items carry their own traceparent.
 */
export function runForBatch<T>(firstItemTraceparent: string | undefined, fn: () => T): T {
  const parent = parseTraceparent(firstItemTraceparent);
  return runInSpan(newSpan(parent), fn);
}
