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

/** The master key from TAPCREDIT_MASTER_KEY (hex) or a file holding it in hex. */
export function loadMasterKey(file?: string): Buffer {
  const hex = process.env.TAPCREDIT_MASTER_KEY ?? (file ? readFileSync(file, 'utf8') : undefined);
  if (!hex) throw new Error('no master key: set TAPCREDIT_MASTER_KEY or TAPCREDIT_MASTER_KEY_FILE');
  const key = Buffer.from(hex.trim(), 'hex');
  if (key.length < 16) throw new Error('the master key must be at least 16 bytes of hex');
  return key;
}

/** The signing key from TAPCREDIT_SIGNING_KEY (PKCS#8 PEM) or a PEM file. */
export const loadSigningKey = (file: string): KeyObject => createPrivateKey(process.env.TAPCREDIT_SIGNING_KEY ?? readFileSync(file));
export const loadPublicKey = (file: string): KeyObject => createPublicKey(readFileSync(file));

/** Creates the authorizer's development holder key in dir when missing; returns its file. */
export function ensureDevHolderKey(dir: string): string {
  const file = join(dir, 'authorizer-holder.key');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  return file;
}

/** The authorizer's holder key from TAPCREDIT_HOLDER_KEY (hex) or a file holding it in hex. */
export function loadHolderKey(file?: string): Buffer {
  const hex = process.env.TAPCREDIT_HOLDER_KEY ?? (file ? readFileSync(file, 'utf8') : undefined);
  if (!hex) throw new Error('no holder key: set TAPCREDIT_HOLDER_KEY or TAPCREDIT_HOLDER_KEY_FILE');
  const key = Buffer.from(hex.trim(), 'hex');
  if (key.length < 32) throw new Error('the holder key must be at least 32 bytes of hex');
  return key;
}
