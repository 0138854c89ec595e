// Promise form of a generated grpc-js client call, always with a deadline
// and the caller's trace; and the channel target of an address setting that
// may list several replicas.
import { isIPv4, isIPv6 } from 'node:net';
import type { CallOptions, ChannelOptions, Client, Metadata, ServiceError } from '@grpc/grpc-js';
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
  /** A rider's access token, sent as "authorization: Bearer <token>" (rider RPCs from the phone app). */
  accessToken?: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    // The current trace goes along (W3C traceparent), so the callee's logs join it.
    const metadata = outgoingMetadata();
    if (accessToken) metadata.set('authorization', `Bearer ${accessToken}`);
    method.call(client, request, metadata, { deadline: Date.now() + deadlineMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** Codes on which a call may be retried with the same idempotency key. */
export const RETRYABLE_CODES = new Set([4 /* DEADLINE_EXCEEDED */, 14 /* UNAVAILABLE */, 8 /* RESOURCE_EXHAUSTED */]);

/** The addresses of an address setting: "host:port" or several, comma-separated ("10.0.0.5:50052,10.0.0.6:50052"). */
export function splitAddresses(addresses: string): string[] {
  const list = addresses.split(',').map((a) => a.trim()).filter(Boolean);
  if (list.length === 0) throw new Error(`no address in ${JSON.stringify(addresses)}`);
  return list;
}

const ROUND_ROBIN: ChannelOptions = {
  // Spreads calls over every address the target resolves to, instead of grpc-js's default of sticking to the first that connects.
  'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  // grpc-js backs reconnects off up to 2 minutes by default: a replica back from a restart should rejoin within seconds.
  'grpc.max_reconnect_backoff_ms': 5_000,
};

/**
 * The grpc-js target and channel options of an address setting, so a client
 * reaches every replica of a service: calls go round robin over the ready
 * replicas, and a replica that dies is skipped until it is back (its
 * in-flight calls fail UNAVAILABLE and the caller's outbox retries them).
 * One address is used as given: a DNS name that resolves to several
 * replicas (e.g. a Kubernetes headless service) is balanced over all of
 * them. Several addresses must be IP literals (grpc-js resolves a list only
 * as a static "ipv4:" or "ipv6:" target); "localhost" stands for 127.0.0.1.
 */
export function channelTarget(addresses: string): { target: string; options: ChannelOptions } {
  const list = splitAddresses(addresses);
  if (list.length === 1) return { target: list[0], options: ROUND_ROBIN };
  const v4: string[] = [];
  const v6: string[] = [];
  for (const address of list) {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(address);
    const host = m?.[1] ?? (m?.[2] === 'localhost' ? '127.0.0.1' : m?.[2]);
    if (m?.[1] && isIPv6(m[1])) v6.push(`[${m[1]}]:${m[3]}`);
    else if (host && isIPv4(host)) v4.push(`${host}:${m![3]}`);
    else throw new Error(`${JSON.stringify(address)}: a list of addresses takes IP:port entries only (or one DNS name that resolves to every replica)`);
  }
  if (v4.length > 0 && v6.length > 0) throw new Error(`${JSON.stringify(addresses)}: list IPv4 or IPv6 addresses, not both`);
  return { target: v4.length > 0 ? `ipv4:${v4.join(',')}` : `ipv6:${v6.join(',')}`, options: ROUND_ROBIN };
}
