// Authorization by peer identity, in one place per server: a table
// (RPC -> roles allowed, plus an optional check that the request names the
// caller itself) enforced by a server interceptor before any handler runs.
// RPCs not in the table are refused (fail closed), so a new RPC must be
// added to its service's table to be callable. Only active with mTLS: on a
// plaintext (--insecure, loopback-only) server there is no peer identity.
import { ServerInterceptingCall, type Metadata, type ServerInterceptor, type ServiceDefinition } from '@grpc/grpc-js';
import { ApiError, apiError, toServiceError } from './errors.js';
import type { PeerIdentity, Role } from './identity.js';
import type { Logger } from './log.js';
import { peerIdentity } from './tls.js';

export interface AccessRule {
  /** Roles that may call the RPC. */
  allow: readonly Role[];
  /**
   * For RPCs whose request names the caller (a terminal's taps, the issuer
   * asking for a debit): a refusal text when it names someone else.
   */
  bind?: (peer: PeerIdentity, request: any, rider?: string) => string | undefined;
  /**
   * A rider's RPC: from the phone app it must carry the rider's access token
   * ("authorization: Bearer <token>"), verified by the policy's verifyRider;
   * the rider's account id then reaches bind and the handler (riderOf).
   */
  rider?: boolean;
}

export interface AccessPolicy {
  /** Fully-qualified service name, e.g. "tapcredit.issuer.v1.IssuerService". */
  service: string;
  /** ErrorInfo domain of the service's errors. */
  domain: string;
  /** RPC name as in the proto -> who may call it. */
  rules: Record<string, AccessRule>;
  /** Verifies a rider's access token (rules with rider: true); the account id it names, or an UNAUTHENTICATED ApiError. */
  verifyRider?: (token: string) => Promise<string>;
  /** Rate limits (common/rate-limit.ts): throws RESOURCE_EXHAUSTED when the caller has called too often. */
  limit?: (call: { rpc: string; peer: PeerIdentity; rider?: string; request: unknown }) => Promise<void>;
}

/** Roles that act for a rider and so must show the rider's token on rider RPCs. */
const RIDER_ROLES: readonly Role[] = ['phone'];

/** Call metadata by which the interceptor hands the verified rider to the handler; whatever a caller sends under it is dropped. */
const RIDER_METADATA = 'x-tapcredit-verified-rider';

/** The rider account a call was verified for (rider RPCs from the phone app); undefined for other callers. */
export function riderOf(call: { metadata: Metadata }): string | undefined {
  const [value] = call.metadata.get(RIDER_METADATA);
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The token of "authorization: Bearer <token>" metadata; undefined when there is none. */
export function bearerToken(metadata: Metadata): string | undefined {
  const values = metadata.get('authorization');
  if (values.length !== 1 || typeof values[0] !== 'string') return undefined;
  return /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(values[0])?.[1];
}

/** Services every authenticated peer may use: health checks and reflection. */
export const OPEN_SERVICES = ['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection'];

/** The RPC names of a generated service definition that have no rule (to keep tables complete). */
export const rpcsWithoutRule = (policy: AccessPolicy, definition: ServiceDefinition): string[] =>
  Object.values(definition)
    .map((m) => m.path.slice(m.path.lastIndexOf('/') + 1))
    .filter((rpc) => !(rpc in policy.rules));

/** Convenience for rules: refuse unless the request's field equals the caller's name. */
export const namesCaller = (field: string, value: string, peer: PeerIdentity): string | undefined =>
  value === peer.name ? undefined : `${field} ${JSON.stringify(value)} is not the caller (${peer.uri})`;

type Decision = { ok: true } | { ok: false; error: ApiError };

/** The decision for a call to path by peer, before its request is read. */
export function decideCall(policies: AccessPolicy[], path: string, peer: PeerIdentity | undefined): Decision & { rule?: AccessRule } {
  const [, service = '', rpc = ''] = /^\/([^/]+)\/([^/]+)$/.exec(path) ?? [];
  const meta = { rpc: `${service}/${rpc}`, peer: peer?.uri ?? '' };
  if (!peer) {
    return { ok: false, error: apiError('PEER_IDENTITY_MISSING', 'the client certificate carries no tapcredit identity (spiffe://tapcredit/<role>/<name>)', meta) };
  }
  if (OPEN_SERVICES.includes(service)) return { ok: true };
  const rule = policies.find((p) => p.service === service)?.rules[rpc];
  if (!rule) return { ok: false, error: apiError('RPC_NOT_IN_POLICY', `${meta.rpc} is not open to any caller`, meta) };
  if (!rule.allow.includes(peer.role)) {
    return {
      ok: false,
      error: apiError('PEER_ROLE_NOT_ALLOWED', `${rpc} may be called by ${rule.allow.join(', ')}; not by ${peer.uri}`, {
        ...meta,
        allowed_roles: rule.allow.join(','),
      }),
    };
  }
  return { ok: true, rule };
}

/** The decision once the request is read, for rules that bind it to the caller. */
export function decideRequest(rule: AccessRule | undefined, path: string, peer: PeerIdentity, request: unknown, rider?: string): Decision {
  // A body that did not parse (common/server.ts MalformedRequest) goes on to be refused as INVALID_ARGUMENT.
  if (Object.getPrototypeOf(request) !== Object.prototype) return { ok: true };
  const refusal = rule?.bind?.(peer, request, rider);
  if (!refusal) return { ok: true };
  const rpc = path.slice(1);
  return { ok: false, error: apiError('PEER_IDENTITY_MISMATCH', refusal, { rpc, peer: peer.uri }) };
}

/** The interceptor that enforces the policies; a refused call ends with the status and never reaches its handler. */
export function authorizationInterceptor(policies: AccessPolicy[], log: Logger, isRevoked?: (serialHex: string | undefined) => boolean): ServerInterceptor {
  return (method, call) => {
    let peer: PeerIdentity | undefined;
    let rule: AccessRule | undefined;
    let rider: string | undefined;
    let refused = false;
    // Steps run in arrival order, each after the asynchronous checks before it (token, rate limit).
    let chain: Promise<void> = Promise.resolve();
    const policy = policies.find((p) => method.path.startsWith(`/${p.service}/`));
    const refuse = (error: ApiError) => {
      if (refused) return;
      refused = true;
      log.warn({ rpc: method.path, peer: peer?.uri, code: error.code, reason: error.reason }, 'rpc refused by access policy');
      const { code, details, metadata } = toServiceError(error, policy?.domain ?? 'tapcredit');
      call.sendStatus({ code: code!, details: details!, metadata: metadata! });
    };
    const then = (step: () => void | Promise<void>) => {
      chain = chain.then(step).catch((err: unknown) => refuse(err instanceof ApiError ? err : apiError('INTERNAL', 'the access check failed')));
    };
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            peer = peerIdentity(call);
            if (isRevoked?.(call.getAuthContext()?.sslPeerCertificate?.serialNumber)) {
              return refuse(apiError('PEER_CERTIFICATE_REVOKED', `the client certificate (${peer?.uri ?? 'no identity'}) is revoked`, { peer: peer?.uri ?? '' }));
            }
            const decision = decideCall(policies, method.path, peer);
            if (!decision.ok) return refuse(decision.error);
            rule = decision.rule;
            metadata.remove(RIDER_METADATA);
            if (!rule?.rider || !peer || !RIDER_ROLES.includes(peer.role)) return nextMetadata(metadata);
            const token = bearerToken(metadata);
            if (!token || !policy?.verifyRider) {
              return refuse(apiError('ACCESS_TOKEN_MISSING', 'a rider call from the phone app needs the rider\'s access token: "authorization: Bearer <token>" (sign in first)'));
            }
            const verify = policy.verifyRider;
            then(async () => {
              rider = await verify(token);
              metadata.set(RIDER_METADATA, rider);
              nextMetadata(metadata);
            });
          },
          onReceiveMessage: (message, nextMessage) =>
            then(async () => {
              if (refused) return;
              const decision = decideRequest(rule, method.path, peer!, message, rider);
              if (!decision.ok) return refuse(decision.error);
              if (policy?.limit && peer) await policy.limit({ rpc: method.path.slice(method.path.lastIndexOf('/') + 1), peer, rider, request: message });
              if (!refused) nextMessage(message);
            }),
          onReceiveHalfClose: (nextHalfClose) =>
            then(() => {
              if (!refused) nextHalfClose();
            }),
        }),
    });
  };
}
