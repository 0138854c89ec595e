// Verifies riders' access tokens (JWTs the credit authorizer signs, see
// authorizer/sign-in.ts) with the authorizer's published key set (GetJwks).
// The set is cached for maxAgeMs and fetched again when it is older, so a
// retired key stops verifying within maxAgeMs; a token naming a key not in the
// cache makes it fetch at once (at most once per cooldownMs), so a rotated key
// is picked up without a restart.
import { setTimeout as sleep } from 'node:timers/promises';
import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet } from 'jose';
import { ApiError, apiError } from '../common/errors.js';

export interface PublishedKeys {
  jwksJson: string;
  tokenIssuer: string;
}

export interface RiderTokenVerifierOptions {
  /** The tokens' audience: this issuer's id. */
  audience: string;
  /** Fetches the authorizer's key set (GetJwks). */
  fetchKeys(): Promise<PublishedKeys>;
  maxAgeMs?: number;
  cooldownMs?: number;
  /** Allowed clock difference with the authorizer, in seconds. */
  clockToleranceSec?: number;
  now?: () => number;
}

export const DEFAULT_JWKS_MAX_AGE_MS = 60_000;
const DEFAULT_COOLDOWN_MS = 1_000;

/** The rider a verified token names. */
export interface RiderPrincipal {
  accountId: string;
}

interface Cached {
  keys: ReturnType<typeof createLocalJWKSet>;
  tokenIssuer: string;
  fetchedAt: number;
}

export class RiderTokenVerifier {
  private cached?: Cached;
  private fetching?: Promise<Cached>;

  constructor(private readonly opts: RiderTokenVerifierOptions) {}

  private now = () => (this.opts.now ?? Date.now)();

  private fetch(): Promise<Cached> {
    this.fetching ??= this.opts
      .fetchKeys()
      .then((published) => {
        const set = JSON.parse(published.jwksJson) as JSONWebKeySet;
        return (this.cached = { keys: createLocalJWKSet(set), tokenIssuer: published.tokenIssuer, fetchedAt: this.now() });
      })
      .finally(() => (this.fetching = undefined));
    return this.fetching;
  }

  private async current(): Promise<Cached> {
    const c = this.cached;
    if (c && this.now() - c.fetchedAt < (this.opts.maxAgeMs ?? DEFAULT_JWKS_MAX_AGE_MS)) return c;
    try {
      return await this.fetch();
    } catch (err) {
      if (c) return c; // the authorizer is away: the last set is the best there is
      throw apiError('AUTHORIZER_UNAVAILABLE', `the credit authorizer's token keys could not be fetched (${(err as Error).message}); retry later`);
    }
  }

  /** The rider of a valid token; UNAUTHENTICATED otherwise. */
  async verify(token: string): Promise<RiderPrincipal> {
    let keys = await this.current();
    const attempt = (k: Cached) =>
      jwtVerify(token, k.keys, {
        algorithms: ['EdDSA'],
        audience: this.opts.audience,
        issuer: k.tokenIssuer,
        requiredClaims: ['sub', 'exp', 'iat'],
        clockTolerance: this.opts.clockToleranceSec ?? 5,
        currentDate: new Date(this.now()),
      });
    try {
      let result;
      try {
        result = await attempt(keys);
      } catch (err) {
        // A key newer than the cache (a rotation): fetch the set again, at most once per
        // cooldown. A token that comes within the cooldown of the last fetch waits for the
        // next one rather than fail, so a rider signed in just after a rotation is served;
        // however many such tokens come, they share that one fetch.
        if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
        const wait = keys.fetchedAt + (this.opts.cooldownMs ?? DEFAULT_COOLDOWN_MS) - this.now();
        if (wait > 0) await sleep(wait);
        keys = this.cached && this.cached.fetchedAt > keys.fetchedAt ? this.cached : await this.fetch();
        result = await attempt(keys);
      }
      return { accountId: result.payload.sub! };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err instanceof errors.JWTExpired) throw apiError('ACCESS_TOKEN_EXPIRED', 'the access token has expired; refresh it or sign in again');
      const why = err instanceof errors.JOSEError ? err.code : 'malformed';
      throw apiError('ACCESS_TOKEN_INVALID', `the access token is not valid here (${why}); sign in again`, { cause: why });
    }
  }
}
