// Runs the ops scripts (scripts/ops/*.sh) against a running test system, the
// way an operator would: addresses from the environment, plaintext or mTLS
// with the ops certificate from TAPCREDIT_CERTS_DIR.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { System } from '../helpers/system.js';

const root = new URL('../..', import.meta.url).pathname;

export interface OpsResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment that points the scripts at sys; with certsDir, over mTLS. */
export function opsEnv(sys: System, certsDir?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    TERMINAL_ADDRESS: sys.terminals[0].address,
    ISSUER_ADDRESS: sys.issuer.address,
    AUTHORIZER_ADDRESS: sys.authorizer.address,
    // Never pick up a developer's ./data/certs.
    TAPCREDIT_DATA_DIR: sys.dir,
  };
  if (certsDir) env.TAPCREDIT_CERTS_DIR = certsDir;
  return env;
}

/** Writes the system's ops certificate where the scripts look for it (ca.pem, ops.pem, ops.key); returns the directory. */
export function writeOpsCerts(sys: System): string {
  if (!sys.tls) throw new Error('the system runs without mTLS');
  const dir = join(sys.dir, 'ops-certs');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'ca.pem'), sys.tls.ops.ca);
  writeFileSync(join(dir, 'ops.pem'), sys.tls.ops.cert);
  writeFileSync(join(dir, 'ops.key'), sys.tls.ops.key, { mode: 0o600 });
  return dir;
}

export function runOps(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<OpsResult> {
  return new Promise((resolve) => {
    execFile(join(root, 'scripts/ops', script), args, { env, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The JSON documents a script printed one after another (buf curl and grpcurl pretty-print each response). */
export function jsonDocuments(stdout: string): any[] {
  const docs: any[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < stdout.length; i++) {
    const c = stdout[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}' && --depth === 0) docs.push(JSON.parse(stdout.slice(start, i + 1)));
  }
  return docs;
}
