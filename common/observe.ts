// What every RPC gets on its way through a server, in one wrapper around the
// service implementation: its trace (from the caller's traceparent or a new
// one) held for the whole call, one access log line (rpc, peer, ids, code,
// duration) and the RPC metrics. Also the readiness probe that turns health
// NOT_SERVING while the database cannot be reached.
import { status, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { peerIdentity } from './tls.js';
import { runInSpan, serverSpan } from './trace.js';

/** Top-level request fields worth a log line: ids only, never card data, keys or personal details. */
const ID_FIELDS = ['requestId', 'settlementId', 'terminalId', 'cardId', 'accountId', 'agreementId', 'issuerId', 'authorizerId', 'tapId'] as const;
/** How many ids of a batch the access log names (every item is logged on its own by the domain code). */
const BATCH_IDS_LOGGED = 5;

/** Where a bidirectional call's handler leaves the ids for its access log line (common/server.ts bidiHandler). */
export const CALL_IDS = Symbol('tapcredit.callIds');

/** Longest id the access log copies whole; a longer one is cut with its length noted, so no caller can grow the log by sending a long field. */
export const MAX_LOGGED_ID = 64;

/** A value as the access log writes it: at most MAX_LOGGED_ID characters plus a short note of how long it really was. */
export const boundedForLog = (value: string): string =>
  value.length <= MAX_LOGGED_ID ? value : `${value.slice(0, MAX_LOGGED_ID)}...(${value.length} chars)`;

/** The ids of a request, for its access log line: e.g. {request_id}, or {taps: 500, tap_ids: [first five]}. */
export function requestIds(request: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!request || typeof request !== 'object') return out;
  const r = request as Record<string, unknown>;
  for (const f of ID_FIELDS) {
    if (typeof r[f] === 'string' && r[f] !== '') out[f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = boundedForLog(r[f] as string);
  }
  for (const list of ['taps', 'items'] as const) {
    const items = r[list];
    if (!Array.isArray(items)) continue;
    out[list] = items.length;
    const ids = items
      .slice(0, BATCH_IDS_LOGGED)
      .map((i: Record<string, unknown>) => i?.tapId || i?.requestId)
      .filter((id): id is string => typeof id === 'string' && id !== '')
      .map(boundedForLog);
    if (ids.length > 0) out[list === 'taps' ? 'tap_ids' : 'item_ids'] = ids;
  }
  return out;
}

/**
 * Wraps every method of a service implementation: runs it in the call's
 * span and, for unary and bidirectional methods, logs and measures it when
 * it ends.
 */
export function observeService(
  serviceName: string,
  definition: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  opts: { log: Logger; metrics?: Metrics },
): UntypedServiceImplementation {
  const { log, metrics } = opts;
  const service = serviceName.split('.').pop()!;
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, impl] of Object.entries(implementation) as [string, (call: any, callback?: any) => void][]) {
    const method = definition[name];
    if (!method) {
      wrapped[name] = impl;
      continue;
    }
    const rpc = method.path.slice(method.path.lastIndexOf('/') + 1);
    const handled = (call: any, started: bigint, code: number, request: unknown) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const codeName = status[code] ?? String(code);
      metrics?.rpcHandled.inc({ grpc_service: serviceName, grpc_method: rpc, grpc_code: codeName });
      metrics?.rpcSeconds.observe({ grpc_service: serviceName, grpc_method: rpc, grpc_code: codeName }, seconds);
      // The caller's certificate identity beside its address (none on a plaintext server).
      const identity = call.getAuthContext ? peerIdentity(call)?.uri : undefined;
      log.info({ service, rpc, peer: call.getPeer?.(), peer_identity: identity, ...requestIds(request), code: codeName, duration_ms: Math.round(seconds * 1e6) / 1e3 }, 'rpc');
    };
    if (method.requestStream && method.responseStream) {
      // A session: measured and logged once, when it ends (its status is set by an 'error' event, or OK at the end).
      wrapped[name] = (call: any) => {
        const started = process.hrtime.bigint();
        metrics?.rpcStarted.inc({ grpc_service: serviceName, grpc_method: rpc });
        let code: number = status.OK;
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          handled(call, started, code, call[CALL_IDS]);
        };
        call.on('error', (err: { code?: number }) => (code = err?.code ?? status.UNKNOWN));
        call.on('cancelled', () => (code = status.CANCELLED));
        call.on('finish', finish);
        call.on('close', finish);
        runInSpan(serverSpan(call.metadata), () => impl(call));
      };
      continue;
    }
    if (method.requestStream || method.responseStream) {
      // Watches: traced (their logs carry the trace), not measured here.
      wrapped[name] = (call: any) => runInSpan(serverSpan(call.metadata), () => impl(call));
      continue;
    }
    wrapped[name] = (call: any, callback: (...args: any[]) => void) => {
      const started = process.hrtime.bigint();
      metrics?.rpcStarted.inc({ grpc_service: serviceName, grpc_method: rpc });
      runInSpan(serverSpan(call.metadata), () =>
        impl(call, (err: { code?: number } | null, ...rest: unknown[]) => {
          handled(call, started, err ? (err.code ?? status.UNKNOWN) : status.OK, call.request);
          callback(err, ...rest);
        }),
      );
    };
  }
  return wrapped;
}

export interface HealthSetter {
  setStatus(service: string, status: 'SERVING' | 'NOT_SERVING'): void;
}

export interface ReadinessOptions {
  /** Resolves when the server can do its work (e.g. `select 1` on its database). */
  check: () => Promise<unknown>;
  /** Time between probes. Default 2000 ms. */
  intervalMs?: number;
  /** A probe that takes longer counts as failed. Default 2000 ms. */
  timeoutMs?: number;
}

/**
 * Probes readiness periodically and sets every health status to SERVING or
 * NOT_SERVING accordingly, logging each change. Returns stop().
 */
export function watchReadiness(
  opts: ReadinessOptions & { health: HealthSetter; services: string[]; log: Logger; metrics?: Metrics },
): () => void {
  const intervalMs = opts.intervalMs ?? 2000;
  const timeoutMs = opts.timeoutMs ?? 2000;
  let serving = true;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  opts.metrics?.databaseUp.set(1);

  const probe = async () => {
    let ok = true;
    let error: string | undefined;
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        opts.check(),
        new Promise((_, reject) => {
          timeout = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      ok = false;
      error = err instanceof Error ? err.message : String(err);
    } finally {
      clearTimeout(timeout);
    }
    if (stopped) return;
    opts.metrics?.databaseUp.set(ok ? 1 : 0);
    if (ok !== serving) {
      serving = ok;
      const state = ok ? 'SERVING' : 'NOT_SERVING';
      for (const s of ['', ...opts.services]) opts.health.setStatus(s, state);
      if (ok) opts.log.info({ health: state }, 'database reachable again; serving');
      else opts.log.error({ health: state, error }, 'database unreachable; health is NOT_SERVING');
    }
    timer = setTimeout(probe, intervalMs);
    timer.unref();
  };
  timer = setTimeout(probe, intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
