// Issuer secrets: the card master key (held by the issuer and by each
// terminal's SAM) and the Ed25519 key that signs credit flags. They come
// from files or the environment and are never logged.
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

export const loadSigningKey = (file: string): KeyObject => createPrivateKey(readFileSync(file));
export const loadPublicKey = (file: string): KeyObject => createPublicKey(readFileSync(file));
