// Server bootstrap shared by the three services: handlers with one error
// mapping, gRPC health, server reflection from the full descriptor set, mTLS
// with authorization by peer identity (common/authz.ts), and graceful shutdown.
import { readFileSync } from 'node:fs';
import {
  Server,
  ServerCredentials,
  type handleBidiStreamingCall,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type handleUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import type { PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { authorizationInterceptor, type AccessPolicy } from './authz.js';
import { RevocationWatcher } from './revocation.js';
import { invalidArgument, toServiceError } from './errors.js';
import type { Logger } from './log.js';
import type { Metrics, MetricsServer } from './metrics.js';
import { CALL_IDS, observeService, watchReadiness, type ReadinessOptions } from './observe.js';
import { serverCredentials, type TlsConfig } from './tls.js';

// Built by `npm run generate` with buf: ours, and grpc.health.v1 from grpc-health-check's proto.
const DESCRIPTOR_SETS = ['../gen/descriptor.binpb', '../gen/health.binpb'].map((f) => new URL(f, import.meta.url));

/** The async form of a ts-proto service interface: each method takes the request and resolves the response. */
export type AsyncHandlers<S> = {
  [K in keyof S as string extends K ? never : K]: S[K] extends handleUnaryCall<infer Req, infer Res>
    ? (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>
    : never;
};

/** Adapts async handlers to grpc-js, mapping every thrown error to a gRPC status in one place. */
export function unaryHandlers<S extends UntypedServiceImplementation>(
  domain: string,
  log: Logger,
  handlers: AsyncHandlers<S>,
): S {
  const adapted: Record<string, handleUnaryCall<unknown, unknown>> = {};
  for (const [method, handler] of Object.entries(handlers) as [string, (req: unknown, call: unknown) => Promise<unknown>][]) {
    adapted[method] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const started = process.hrtime.bigint();
      if (call.request instanceof MalformedRequest) {
        log.info({ rpc: method, code: 3, reason: 'MALFORMED_REQUEST' }, 'rpc refused');
        callback(toServiceError(call.request.toError(), domain), null);
        return;
      }
      handler(call.request, call).then(
        // Every answer gets its access log line in observe.ts; refusals and failures add their reason here.
        (response) => callback(null, response),
        (err) => {
          const serviceError = toServiceError(err, domain);
          const fields = { rpc: method, code: serviceError.code, reason: err?.reason, ms: Number(process.hrtime.bigint() - started) / 1e6 };
          if (serviceError.code === 13) log.error({ ...fields, err }, 'rpc failed');
          else log.info(fields, 'rpc refused');
          callback(serviceError, null);
        },
      );
    };
  }
  return adapted as S;
}

/** A bidirectional call as a session: receive the next message (or learn it did not come), send, note ids for the access log. */
export interface DuplexSession<Req, Res> {
  /** The next message; 'timeout' when none came within timeoutMs, 'end' when the caller closed its side (or cancelled). A body that does not parse throws INVALID_ARGUMENT. */
  receive(timeoutMs: number): Promise<{ message: Req } | 'timeout' | 'end'>;
  send(message: Res): void;
  /** Ids for the call's access log line (common/observe.ts), e.g. { cardId, tapId }. */
  note(ids: Record<string, string>): void;
}

/**
 * Adapts an async bidirectional handler to grpc-js: the call ends OK when it
 * resolves, and with the error mapped to a gRPC status (as unaryHandlers
 * does) when it throws.
 */
export function bidiHandler<Req, Res>(
  domain: string,
  log: Logger,
  rpc: string,
  run: (session: DuplexSession<Req, Res>) => Promise<void>,
): handleBidiStreamingCall<Req, Res> {
  return (call: ServerDuplexStream<Req, Res>) => {
    const started = process.hrtime.bigint();
    const queue: (Req | 'end')[] = [];
    let wake: (() => void) | undefined;
    const push = (item: Req | 'end') => {
      queue.push(item);
      wake?.();
    };
    call.on('data', (m: Req) => push(m));
    call.on('end', () => push('end'));
    call.on('cancelled', () => push('end'));
    call.on('error', () => push('end'));
    const ids: Record<string, string> = {};
    (call as unknown as Record<symbol, unknown>)[CALL_IDS] = ids;
    const session: DuplexSession<Req, Res> = {
      receive: async (timeoutMs) => {
        if (queue.length === 0) {
          let timer: NodeJS.Timeout | undefined;
          const timedOut = await new Promise<boolean>((resolve) => {
            wake = () => resolve(false);
            timer = setTimeout(() => resolve(true), timeoutMs);
          });
          wake = undefined;
          clearTimeout(timer);
          if (timedOut && queue.length === 0) return 'timeout';
        }
        const item = queue.shift()!;
        if (item === 'end') {
          queue.unshift('end'); // every later receive ends too
          return 'end';
        }
        if (item instanceof MalformedRequest) throw item.toError();
        return { message: item };
      },
      send: (message) => {
        if (!call.cancelled && call.writable) call.write(message);
      },
      note: (more) => Object.assign(ids, more),
    };
    run(session).then(
      () => {
        if (!call.cancelled) call.end();
      },
      (err) => {
        const serviceError = toServiceError(err, domain);
        const fields = { rpc, code: serviceError.code, reason: err?.reason, ms: Number(process.hrtime.bigint() - started) / 1e6 };
        if (serviceError.code === 13) log.error({ ...fields, err }, 'rpc failed');
        else log.info(fields, 'rpc refused');
        if (!call.cancelled) call.emit('error', serviceError);
      },
    );
  };
}

/** What a request body that does not parse as its message becomes; the handler adapter answers INVALID_ARGUMENT. */
class MalformedRequest {
  constructor(
    private readonly path: string,
    private readonly problem: string,
  ) {}

  toError() {
    return invalidArgument([{ field: '', description: `does not parse as the request message of ${this.path}: ${this.problem}` }], 'MALFORMED_REQUEST');
  }
}

/** The INVALID_ARGUMENT for a request body that did not parse; undefined for a parsed request (for streaming handlers). */
export const malformedRequestError = (request: unknown) => (request instanceof MalformedRequest ? request.toError() : undefined);

/**
 * grpc-js answers a body its deserializer cannot parse with INTERNAL, as if
 * the server were broken. It is the client's fault: the definition's
 * deserializers hand a MalformedRequest to the handler adapter instead.
 */
function tolerantDefinition(definition: ServiceDefinition): ServiceDefinition {
  const tolerant: Record<string, ServiceDefinition[string]> = {};
  for (const [name, method] of Object.entries(definition)) {
    // Unary handlers go through unaryHandlers, bidirectional ones through
    // bidiHandler; a server-streaming handler checks malformedRequestError() itself.
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new MalformedRequest(method.path, err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  return tolerant as ServiceDefinition;
}

export interface ServiceBinding {
  /** Fully-qualified service name, e.g. "tapcredit.issuer.v1.IssuerService". */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
  /** Who may call each RPC; enforced when the server runs with TLS. Without one, every RPC of the service is refused under TLS. */
  policy?: AccessPolicy;
}

export interface RunningServer {
  /** host:port the server listens on (the real port when 0 was asked). */
  address: string;
  port: number;
  /** host:port of the HTTP /metrics listener, when metricsPort was given. */
  metricsAddress?: string;
  health: HealthImplementation;
  /** Stops taking calls, lets in-flight calls finish (up to graceMs), then closes. */
  close(graceMs?: number): Promise<void>;
}

/** Splits a FileDescriptorSet into its serialized FileDescriptorProtos, untouched. */
function fileDescriptorProtos(set: Uint8Array): Uint8Array[] {
  const reader = new BinaryReader(set);
  const files: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) files.push(reader.bytes());
    else reader.skip(wireType);
  }
  return files;
}

/**
 * Reflection is fed buf's descriptor sets as they are: proto-loader's
 * re-encoded descriptors drop import lists and use relative type names,
 * which breaks grpcurl and buf curl (grpcurl issue #459).
 */
function reflectionPackage(): PackageDefinition {
  const files = DESCRIPTOR_SETS.flatMap((url) => fileDescriptorProtos(readFileSync(url)));
  return { 'tapcredit.descriptor_sets': { fileDescriptorProtos: files } } as unknown as PackageDefinition;
}

export async function startServer(opts: {
  services: ServiceBinding[];
  host: string;
  port: number;
  log: Logger;
  /** mTLS: clients must present a certificate of the CA, and each call is checked against the services' policies. Plaintext when unset. */
  tls?: TlsConfig;
  /** RPC metrics go here; served over HTTP on metricsPort when that is set (0 picks a free port). */
  metrics?: Metrics;
  metricsPort?: number;
  /** Health turns NOT_SERVING while this probe fails (e.g. the database is unreachable). */
  readiness?: ReadinessOptions;
}): Promise<RunningServer> {
  const policies = opts.services.flatMap((s) => (s.policy ? [s.policy] : []));
  // Revoked client certificates are refused call by call, from the CRL file the server watches.
  const revocations = opts.tls?.crlFile ? await RevocationWatcher.start(opts.tls.crlFile, opts.tls.ca.toString('utf8'), opts.log) : undefined;
  const server = new Server(opts.tls ? { interceptors: [authorizationInterceptor(policies, opts.log, revocations?.isRevoked)] } : {});
  for (const s of opts.services) server.addService(tolerantDefinition(s.definition), observeService(s.name, s.definition, s.implementation, opts));

  const health = new HealthImplementation({ '': 'SERVING' });
  for (const s of opts.services) health.setStatus(s.name, 'SERVING');
  health.addToServer(server);

  new ReflectionService(reflectionPackage(), {
    services: [...opts.services.map((s) => s.name), 'grpc.health.v1.Health'],
  }).addToServer(server);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`, opts.tls ? serverCredentials(opts.tls) : ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const address = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  opts.log.info({ address, services: opts.services.map((s) => s.name), transport: opts.tls ? 'mtls' : 'plaintext' }, 'listening');
  let metricsServer: MetricsServer | undefined;
  if (opts.metrics && opts.metricsPort !== undefined) {
    try {
      metricsServer = await opts.metrics.serve(opts.host, opts.metricsPort, opts.log);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
  }
  const stopReadiness = opts.readiness
    ? watchReadiness({ ...opts.readiness, health, services: opts.services.map((s) => s.name), log: opts.log, metrics: opts.metrics })
    : () => {};

  return {
    address,
    port,
    metricsAddress: metricsServer?.address,
    health,
    close: (graceMs = 5000) =>
      new Promise<void>((resolve) => {
        stopReadiness();
        revocations?.close();
        void metricsServer?.close();
        health.setStatus('', 'NOT_SERVING');
        for (const s of opts.services) health.setStatus(s.name, 'NOT_SERVING');
        const timer = setTimeout(() => server.forceShutdown(), graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

/**
 * Takes SIGTERM and SIGINT from now on: once the server has started (see
 * started()), the first signal runs its stop() once and exits. Installed
 * before the server starts, so a signal that comes while it starts (it may
 * already listen) waits for the start and then stops it gracefully, instead
 * of killing the process with the default action.
 */
export function onShutdownSignal(log: Logger): { started(stop: () => Promise<void>): void } {
  let signal: string | undefined;
  let stop: (() => Promise<void>) | undefined;
  let stopping = false;
  const run = () => {
    if (stopping || !signal || !stop) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const take = (name: string) => {
    signal ??= name;
    run();
  };
  process.on('SIGTERM', () => take('SIGTERM'));
  process.on('SIGINT', () => take('SIGINT'));
  return {
    started(s) {
      stop = s;
      run();
    },
  };
}
