// Riders sign in at the authorizer, the identity provider of the issuers'
// phone app: account id + password give a short-lived access token (a JWT
// signed with EdDSA: sub = account id, aud = issuer id, iss = authorizer id)
// and a refresh token. Refresh tokens are random, kept only as SHA-256 hashes,
// used once (each refresh returns the next one of the same family) and
// revocable; a used token seen again revokes its family, since then one copy
// was stolen.
import { createHash, randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Db } from '../common/db.js';
import { toNumber } from '../common/db.js';
import { apiError } from '../common/errors.js';
import { newId } from '../common/ids.js';
import { findAccount } from './accounts.js';
import { decoyHash, hashPassword, verifyPassword } from './passwords.js';
import { currentSigningKey, TOKEN_ALGORITHM, type SigningKey } from './signing-keys.js';

export const DEFAULT_ACCESS_TOKEN_TTL_MS = 5 * 60_000;
export const DEFAULT_REFRESH_TOKEN_TTL_MS = 30 * 24 * 3600_000;

export interface SignInDeps {
  db: Db;
  holderKey: Buffer;
  /** The tokens' iss claim. */
  authorizerId: string;
  accessTokenTtlMs: number;
  refreshTokenTtlMs: number;
  /** True when an audience is an issuer this authorizer works with. */
  knowsAudience(issuerId: string): boolean;
  now?: () => number;
}

export interface RiderTokens {
  accessToken: string;
  accessTokenExpiresAt: Date;
  refreshToken: string;
  refreshTokenExpiresAt: Date;
}

const tokenHash = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

const signInFailed = () => apiError('SIGN_IN_FAILED', 'the account id and password do not match');

function checkAudience(deps: SignInDeps, audience: string): void {
  if (!deps.knowsAudience(audience)) throw apiError('AUDIENCE_UNKNOWN', `audience ${JSON.stringify(audience)} is not an issuer of this authorizer`, { audience });
}

/** Sets the rider's password. With current (the rider's own change) it must match the one set; ops passes none. */
export async function setRiderPassword(deps: SignInDeps, accountId: string, password: string, current: string | undefined): Promise<Date> {
  const { db } = deps;
  const now = (deps.now ?? Date.now)();
  if (current !== undefined) {
    const row = await db('rider_credentials').where({ account_id: accountId }).first('password_hash');
    if (!(await verifyPassword(current, row?.password_hash ?? (await decoyHash()))) || !row) throw signInFailed();
  } else if (!(await findAccount(db, accountId))) {
    throw apiError('ACCOUNT_NOT_FOUND', `account ${JSON.stringify(accountId)} does not exist`, { account_id: accountId });
  }
  const passwordHash = await hashPassword(password);
  await db('rider_credentials').insert({ account_id: accountId, password_hash: passwordHash, set_at: now }).onConflict('account_id').merge();
  // A new password ends every sign-in made with the old one.
  await db('refresh_tokens').where({ account_id: accountId }).whereNull('revoked_at').update({ revoked_at: now });
  return new Date(now);
}

async function issueTokens(deps: SignInDeps, key: SigningKey, accountId: string, audience: string, familyId: string, trx: Db): Promise<RiderTokens> {
  const now = (deps.now ?? Date.now)();
  const accessExp = now + deps.accessTokenTtlMs;
  const accessToken = await new SignJWT({})
    .setProtectedHeader({ alg: TOKEN_ALGORITHM, kid: key.keyId, typ: 'at+jwt' })
    .setSubject(accountId)
    .setAudience(audience)
    .setIssuer(deps.authorizerId)
    .setIssuedAt(Math.floor(now / 1000))
    .setNotBefore(Math.floor(now / 1000))
    .setExpirationTime(Math.floor(accessExp / 1000))
    .setJti(newId('at'))
    .sign(key.privateKey);
  const refreshToken = randomBytes(32).toString('base64url');
  const refreshExp = now + deps.refreshTokenTtlMs;
  await trx('refresh_tokens').insert({ token_hash: tokenHash(refreshToken), family_id: familyId, account_id: accountId, created_at: now, expires_at: refreshExp });
  return { accessToken, accessTokenExpiresAt: new Date(Math.floor(accessExp / 1000) * 1000), refreshToken, refreshTokenExpiresAt: new Date(refreshExp) };
}

export async function signIn(deps: SignInDeps, accountId: string, password: string, audience: string): Promise<RiderTokens> {
  checkAudience(deps, audience);
  const row = await deps.db('rider_credentials').where({ account_id: accountId }).first('password_hash');
  // An unknown account costs one hash too: the answer's timing does not tell it apart.
  const ok = await verifyPassword(password, row?.password_hash ?? (await decoyHash()));
  if (!ok || !row) throw signInFailed();
  const key = await currentSigningKey(deps.db, deps.holderKey);
  return issueTokens(deps, key, accountId, audience, newId('signin'), deps.db);
}

export async function refreshTokens(deps: SignInDeps, refreshToken: string, audience: string): Promise<RiderTokens> {
  checkAudience(deps, audience);
  const now = (deps.now ?? Date.now)();
  const hash = tokenHash(refreshToken);
  const invalid = () => apiError('REFRESH_TOKEN_INVALID', 'the refresh token is unknown, expired, revoked or used; sign in again');
  let reused: string | undefined;
  // Read before the transaction: SQLite has one connection, held by the transaction.
  const key = await currentSigningKey(deps.db, deps.holderKey);
  const tokens = await deps.db.transaction(async (trx) => {
    const row = await trx('refresh_tokens').where({ token_hash: hash }).first();
    if (!row || row.revoked_at != null || toNumber(row.expires_at) <= now) return undefined;
    if (row.used_at != null) {
      reused = row.family_id;
      return undefined;
    }
    // Used up exactly once even when two refreshes race: only one update matches.
    const taken = await trx('refresh_tokens').where({ token_hash: hash }).whereNull('used_at').update({ used_at: now });
    if (taken !== 1) return undefined;
    return issueTokens(deps, key, row.account_id, audience, row.family_id, trx);
  });
  if (reused) await deps.db('refresh_tokens').where({ family_id: reused }).whereNull('revoked_at').update({ revoked_at: now });
  if (!tokens) throw invalid();
  return tokens;
}

/** Revokes the sign-in (family) of a refresh token; unknown tokens are ignored (idempotent). */
export async function signOut(deps: SignInDeps, refreshToken: string): Promise<void> {
  const now = (deps.now ?? Date.now)();
  const row = await deps.db('refresh_tokens').where({ token_hash: tokenHash(refreshToken) }).first('family_id');
  if (row) await deps.db('refresh_tokens').where({ family_id: row.family_id }).whereNull('revoked_at').update({ revoked_at: now });
}
