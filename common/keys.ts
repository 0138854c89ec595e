// Secrets: the card master key (held by the issuer and by each terminal's
// SAM), the Ed25519 key that signs credit flags, and the authorizer's key of
// the holder digests. They come from files or the environment and are never
// logged (test/security/secrets.test.ts checks the logs of a whole ride).
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface KeyFiles {
  masterKeyFile: string;
  signingKeyFile: string;
  publicKeyFile: string;
}

export const keyFilesIn = (dir: string): KeyFiles => ({
  masterKeyFile: join(dir, 'master.key'),
  signingKeyFile: join(dir, 'issuer-signing.pem'),
  publicKeyFile: join(dir, 'issuer-public.pem'),
});

/** Creates development keys in dir where they are missing (files readable by the owner only). */
export function ensureDevKeys(dir: string): KeyFiles {
  const files = keyFilesIn(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(files.masterKeyFile)) writeFileSync(files.masterKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  if (!existsSync(files.signingKeyFile)) {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(files.signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(files.publicKeyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  }
  return files;
}

/**
 * A key file, with a clear error when it is missing: servers never create
 * keys (replicas started together would each make their own); `npm run keys`
 * or `npm start` does, once, before any server starts.
 */
function readKeyFile(file: string, what: string): string {
  if (!existsSync(file)) throw new Error(`no ${what} at ${file}: create the keys once with \`npm run keys\` (node dist/scripts/keys.js init --data-dir <dir>), or point the server at yours`);
  return readFileSync(file, 'utf8');
}

/** The master key from its hex (default TAPCREDIT_MASTER_KEY) or a file holding it in hex. */
export function loadMasterKey(file?: string, inline = process.env.TAPCREDIT_MASTER_KEY): Buffer {
  const hex = inline ?? (file ? readKeyFile(file, 'master key') : undefined);
  if (!hex) throw new Error('no master key: set TAPCREDIT_MASTER_KEY or TAPCREDIT_MASTER_KEY_FILE');
  const key = Buffer.from(hex.trim(), 'hex');
  if (key.length < 16) throw new Error('the master key must be at least 16 bytes of hex');
  return key;
}

/** The signing key from its PKCS#8 PEM (default TAPCREDIT_SIGNING_KEY) or a PEM file. */
export const loadSigningKey = (file: string, inline = process.env.TAPCREDIT_SIGNING_KEY): KeyObject => createPrivateKey(inline ?? readKeyFile(file, 'signing key'));
export const loadPublicKey = (file: string): KeyObject => createPublicKey(readKeyFile(file, 'issuer public key'));

/** Creates the authorizer's development holder key in dir when missing; returns its file. */
export function ensureDevHolderKey(dir: string): string {
  const file = join(dir, 'authorizer-holder.key');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  return file;
}

/** Every key a system needs, created in dir where missing: the issuer's keys and the authorizer's holder key. */
export function ensureAllKeys(dir: string): KeyFiles & { holderKeyFile: string } {
  return { ...ensureDevKeys(dir), holderKeyFile: ensureDevHolderKey(dir) };
}

/** The authorizer's holder key from its hex (default TAPCREDIT_HOLDER_KEY) or a file holding it in hex. */
export function loadHolderKey(file?: string, inline = process.env.TAPCREDIT_HOLDER_KEY): Buffer {
  const hex = inline ?? (file ? readKeyFile(file, 'holder key') : undefined);
  if (!hex) throw new Error('no holder key: set TAPCREDIT_HOLDER_KEY or TAPCREDIT_HOLDER_KEY_FILE');
  const key = Buffer.from(hex.trim(), 'hex');
  if (key.length < 32) throw new Error('the holder key must be at least 32 bytes of hex');
  return key;
}
