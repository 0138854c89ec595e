// Configuration from command-line flags (--name value) with environment
// variables as fallback and local defaults last.
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: flags } = parseArgs({ strict: false, allowPositionals: true });

/** Reads --flag, then the environment variable, then the default. */
export function setting(flag: string, envName: string, def: string): string {
  const fromFlag = flags[flag];
  if (typeof fromFlag === 'string') return fromFlag;
  return process.env[envName] ?? def;
}

export function intSetting(flag: string, envName: string, def: number): number {
  const raw = setting(flag, envName, String(def));
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`--${flag} / ${envName} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Where the SQLite files and development keys live. */
export const dataDir = () => setting('data-dir', 'TAPCREDIT_DATA_DIR', join(process.cwd(), 'data'));

export const DEFAULT_PORTS = { terminal: 50051, issuer: 50052, authorizer: 50053 } as const;
