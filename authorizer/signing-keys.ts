// The Ed25519 keys that sign riders' access tokens. The newest unretired key
// signs; every unretired key is published (GetJwks), so after a rotation the
// tokens signed by the previous key verify until it is retired. Private keys
// are stored encrypted (AES-256-GCM under a key derived from the authorizer's
// holder key), so a copy of the database alone cannot mint tokens; replicas
// sharing the database and the holder key sign with the same keys.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { Db } from '../common/db.js';
import { newId } from '../common/ids.js';

export const TOKEN_ALGORITHM = 'EdDSA';

export interface SigningKey {
  keyId: string;
  privateKey: CryptoKey;
}

const sealKey = (holderKey: Buffer) => Buffer.from(hkdfSync('sha256', holderKey, Buffer.alloc(0), 'tapcredit signing keys', 32));

function seal(holderKey: Buffer, plain: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealKey(holderKey), iv);
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return [iv, cipher.getAuthTag(), body].map((b) => b.toString('base64url')).join('.');
}

function open(holderKey: Buffer, sealed: string): string {
  const [iv, tag, body] = sealed.split('.').map((p) => Buffer.from(p, 'base64url'));
  const decipher = createDecipheriv('aes-256-gcm', sealKey(holderKey), iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
}

/** Creates a key and makes it the current one; with retirePrevious, every older key leaves the key set. */
export async function rotateSigningKey(db: Db, holderKey: Buffer, opts: { retirePrevious: boolean; now?: number }): Promise<string> {
  const now = opts.now ?? Date.now();
  const { privateKey, publicKey } = await generateKeyPair(TOKEN_ALGORITHM, { crv: 'Ed25519', extractable: true });
  const keyId = newId('key');
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid: keyId, alg: TOKEN_ALGORITHM, use: 'sig' };
  await db.transaction(async (trx) => {
    if (opts.retirePrevious) await trx('signing_keys').whereNull('retired_at').update({ retired_at: now });
    await trx('signing_keys').insert({
      key_id: keyId,
      private_jwk: seal(holderKey, JSON.stringify(await exportJWK(privateKey))),
      public_jwk: JSON.stringify(publicJwk),
      created_at: now,
    });
  });
  return keyId;
}

/** Unretired keys, newest first. */
async function liveKeys(db: Db) {
  return db('signing_keys').whereNull('retired_at').orderBy([{ column: 'created_at', order: 'desc' }, { column: 'key_id', order: 'desc' }]);
}

/** The key that signs now; creates the first one when there is none. */
export async function currentSigningKey(db: Db, holderKey: Buffer): Promise<SigningKey> {
  let [row] = await liveKeys(db);
  if (!row) {
    await rotateSigningKey(db, holderKey, { retirePrevious: false });
    [row] = await liveKeys(db);
  }
  const jwk = JSON.parse(open(holderKey, row.private_jwk)) as JWK;
  return { keyId: row.key_id, privateKey: (await importJWK(jwk, TOKEN_ALGORITHM)) as CryptoKey };
}

/** The published key set: every unretired key's public half, newest first. */
export async function publishedKeySet(db: Db): Promise<{ keys: JWK[] }> {
  return { keys: (await liveKeys(db)).map((row: { public_jwk: string }) => JSON.parse(row.public_jwk) as JWK) };
}
