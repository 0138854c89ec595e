// Per-identity rate limits on the calls of riders and operators, with
// rate-limiter-flexible's in-memory limiter (per process: each replica
// limits what it serves). The identity is the rider (the account of the
// access token, or the account a sign-in names), else the caller's
// certificate: all riders share the phone app's certificate, so limiting by
// certificate alone would let one rider starve the others. Services calling
// each other (terminals, issuers, authorizers) are not limited here.
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { apiError } from './errors.js';
import type { AccessPolicy } from './authz.js';
import type { Role } from './identity.js';

export interface RateLimitOptions {
  /** Calls a rider may make per second (0: no limit). */
  riderCallsPerSecond: number;
  /** Calls an operator may make per second (0: no limit). */
  opsCallsPerSecond: number;
  /** Enrollment attempts per card per hour (0: no limit). */
  enrollmentsPerCardPerHour?: number;
}


function refusal(res: RateLimiterRes, what: string) {
  const err = apiError('RATE_LIMITED', `${what}; retry in ${Math.ceil(res.msBeforeNext / 1000)} s`, { retry_after_ms: String(res.msBeforeNext) });
  err.retryDelayMs = res.msBeforeNext;
  return err;
}

/** The policy's limit hook (common/authz.ts). */
export function rateLimits(opts: RateLimitOptions): NonNullable<AccessPolicy['limit']> {
  const limiter = (perSecond: number) => (perSecond > 0 ? new RateLimiterMemory({ points: perSecond, duration: 1 }) : undefined);
  const byRole: Partial<Record<Role, RateLimiterMemory | undefined>> = { phone: limiter(opts.riderCallsPerSecond), ops: limiter(opts.opsCallsPerSecond) };
  const perCard = opts.enrollmentsPerCardPerHour ? new RateLimiterMemory({ points: opts.enrollmentsPerCardPerHour, duration: 3600 }) : undefined;
  return async ({ rpc, peer, rider, request }) => {
    if (!(peer.role in byRole)) return;
    const calls = byRole[peer.role];
    const req = (request ?? {}) as { accountId?: unknown; card?: { proof?: { cardId?: unknown } } };
    const named = peer.role === 'phone' && typeof req.accountId === 'string' && req.accountId !== '' ? `account:${req.accountId}` : undefined;
    const identity = rider ? `rider:${rider}` : (named ?? `peer:${peer.uri}`);
    try {
      await calls?.consume(identity);
    } catch (res) {
      if (res instanceof RateLimiterRes) throw refusal(res, `too many calls from ${identity.split(':')[0]} ${identity.slice(identity.indexOf(':') + 1).slice(0, 64)}`);
      throw res;
    }
    const cardId = req.card?.proof?.cardId;
    if (rpc === 'EnrollCard' && perCard && typeof cardId === 'string' && cardId !== '') {
      try {
        await perCard.consume(cardId.slice(0, 64));
      } catch (res) {
        if (res instanceof RateLimiterRes) throw refusal(res, 'too many enrollment attempts for this card');
        throw res;
      }
    }
  };
}
