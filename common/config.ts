// Configuration from command-line flags (--name value) with environment
// variables as fallback and local defaults last.
import { join } from 'node:path';
import { SERVER_PORTS } from './settings.js';

/** Flags given as `--name value` or `--name=value`. */
function parseFlags(argv: string[]): Record<string, string> {
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) continue;
    if (m[2] !== undefined) flags[m[1]] = m[2];
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags[m[1]] = argv[++i];
  }
  return flags;
}

const flags = parseFlags(process.argv.slice(2));

/** Reads --flag, then the environment variable, then the default. */
export function setting(flag: string, envName: string, def: string): string {
  const fromFlag = flags[flag];
  if (typeof fromFlag === 'string') return fromFlag;
  return process.env[envName] ?? def;
}

/** A flag without a value, e.g. --insecure: set only when given on the command line. */
export const booleanFlag = (flag: string): boolean => process.argv.slice(2).some((a) => a === `--${flag}` || a === `--${flag}=true`);

export function intSetting(flag: string, envName: string, def: number): number {
  const raw = setting(flag, envName, String(def));
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`--${flag} / ${envName} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Where the SQLite files and development keys live. */
export const dataDir = () => setting('data-dir', 'TAPCREDIT_DATA_DIR', join(process.cwd(), 'data'));

/**
 * V8 old-space cap of each server process in MB (node --max-old-space-size),
 * as npm start and the bench run them: on a machine with memory to spare V8
 * grows its heap lazily to well past 200 MB, though the live heap is far smaller.
 */
export const SERVER_HEAP_MB = 128;

/** gRPC ports of the servers when run with their defaults (their settings tables hold them, with the metrics ports). */
export const DEFAULT_PORTS = { terminal: SERVER_PORTS.terminal.grpc, issuer: SERVER_PORTS.issuer.grpc, authorizer: SERVER_PORTS.authorizer.grpc } as const;

