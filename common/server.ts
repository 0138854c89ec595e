// Server bootstrap shared by the three services: handlers with one error
// mapping, gRPC health, server reflection from the full descriptor set, and
// graceful shutdown.
import { readFileSync } from 'node:fs';
import {
  Server,
  ServerCredentials,
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
import { toServiceError } from './errors.js';
import type { Logger } from './log.js';

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
      handler(call.request, call).then(
        (response) => {
          log.debug({ rpc: method, code: 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'rpc');
          callback(null, response);
        },
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

export interface ServiceBinding {
  /** Fully-qualified service name, e.g. "tapcredit.issuer.v1.IssuerService". */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface RunningServer {
  /** host:port the server listens on (the real port when 0 was asked). */
  address: string;
  port: number;
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
}): Promise<RunningServer> {
  const server = new Server();
  for (const s of opts.services) server.addService(s.definition, s.implementation);

  const health = new HealthImplementation({ '': 'SERVING' });
  for (const s of opts.services) health.setStatus(s.name, 'SERVING');
  health.addToServer(server);

  new ReflectionService(reflectionPackage(), {
    services: [...opts.services.map((s) => s.name), 'grpc.health.v1.Health'],
  }).addToServer(server);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const address = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  opts.log.info({ address, services: opts.services.map((s) => s.name) }, 'listening');

  return {
    address,
    port,
    health,
    close: (graceMs = 5000) =>
      new Promise<void>((resolve) => {
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

/** Runs stop() once on SIGTERM or SIGINT, then exits. */
export function onShutdownSignal(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
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
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}
