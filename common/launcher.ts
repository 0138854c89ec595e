// Servers as child processes, one way for every tool that launches them:
// `npm start`, the fault-injection and scale tests, the bench. A server runs
// from dist/ (node dist/issuer/main.js, as deployed) or from source through
// tsx; it tells the launcher over the IPC channel where it really listens
// once it serves (common/process.ts). The launcher also prepares what the
// servers of a system share, once, before any starts: keys and certificates.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureAllKeys } from './keys.js';
import { ensureDevPki } from './pki.js';
import { isReadyMessage, type ReadyMessage } from './process.js';

const here = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** True when this module runs compiled, from dist/. */
export const COMPILED = basename(here) === 'dist';
/** The repository (or image) root: where package.json, dist/ and the sources are. */
export const ROOT = COMPILED ? dirname(here) : here;

/** dist: the compiled servers (npm run build); source: the TypeScript through tsx. */
export type Runtime = 'dist' | 'source';

/** dist when running compiled, or when TAPCREDIT_RUNTIME=dist (tests of the build); source otherwise. */
export const defaultRuntime = (): Runtime => (COMPILED || process.env.TAPCREDIT_RUNTIME === 'dist' ? 'dist' : 'source');

/** node's arguments that run an entry point ("issuer/main", relative to the root, no extension). */
export function entryArgs(entry: string, runtime: Runtime = defaultRuntime()): string[] {
  if (runtime === 'source') return ['--import', 'tsx', join(ROOT, `${entry}.ts`)];
  const file = join(ROOT, 'dist', `${entry}.js`);
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`);
  return [file];
}

// Children never outlive the launching process, whatever way it ends.
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface ServerSpec {
  /** e.g. "issuer", "terminal-T1": names its log file and its messages. */
  name: string;
  /** Entry point relative to the root, without extension, e.g. "issuer/main". */
  entry: string;
  args: string[];
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** node's own options, e.g. --max-old-space-size. */
  nodeArgs?: string[];
  /** A directory for <name>.log (appended over restarts), or the launcher's own stdout and stderr. */
  output: { logDir: string } | 'inherit';
  runtime?: Runtime;
}

export interface ExitRecord {
  name: string;
  code: number | null;
  signal: string | null;
  /** The launcher asked for it (signal(), stop()). */
  expected: boolean;
}

/** One server as a child process that can be started, killed and started again (same flags, so same port and database). */
export class ServerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<ExitRecord> | undefined;
  private expectingExit = false;
  starts = 0;
  kills = 0;
  terms = 0;
  private ready: ReadyMessage | undefined;
  /** Set when it ended without being asked to. */
  crashed: string | undefined;

  constructor(
    readonly spec: ServerSpec,
    /** Called when the process exits without being asked to (a crash). */
    private readonly onUnexpectedExit: (exit: ExitRecord) => void = () => {},
  ) {
    if (spec.output !== 'inherit') mkdirSync(spec.output.logDir, { recursive: true });
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** host:port where it listens, as it reported at its last start. */
  get address(): string {
    if (!this.ready) throw new Error(`${this.spec.name} has not started`);
    return this.ready.address;
  }

  /** host:port of its /metrics, when it has one. */
  get metricsAddress(): string | undefined {
    return this.ready?.metricsAddress;
  }

  get logFile(): string | undefined {
    return this.spec.output === 'inherit' ? undefined : join(this.spec.output.logDir, `${this.spec.name}.log`);
  }

  /** Spawns the server and resolves where it listens once it serves; rejects when it exits first or takes longer than timeoutMs. */
  async start(timeoutMs = 120_000): Promise<ReadyMessage> {
    if (this.child) throw new Error(`${this.spec.name} is already running`);
    const logFile = this.logFile;
    const out = logFile ? openSync(logFile, 'a') : 'inherit';
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...(this.spec.nodeArgs ?? []), ...entryArgs(this.spec.entry, this.spec.runtime), ...this.spec.args], {
        cwd: ROOT,
        env: { ...process.env, ...this.spec.env },
        stdio: ['ignore', out, out, 'ipc'],
      });
    } finally {
      if (typeof out === 'number') closeSync(out);
    }
    live.add(child);
    this.child = child;
    this.starts++;
    this.expectingExit = false;
    this.crashed = undefined;
    const where = logFile ? ` (see ${logFile})` : '';
    this.exited = new Promise((resolveExit) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        const record = { name: this.spec.name, code, signal, expected: this.expectingExit };
        if (this.child === child) this.child = undefined;
        if (!record.expected) {
          this.crashed = `${this.spec.name} exited (${signal ?? code})${where}`;
          this.onUnexpectedExit(record);
        }
        resolveExit(record);
      });
    });
    const ready = await new Promise<ReadyMessage>((resolveReady, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.spec.name} did not report ready within ${timeoutMs} ms${where}`)), timeoutMs);
      child.on('message', (m) => {
        if (!isReadyMessage(m)) return;
        clearTimeout(timer);
        resolveReady(m);
      });
      void this.exited!.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`${this.spec.name} exited (${exit.signal ?? exit.code}) while starting${where}`));
      });
    });
    // The server unrefs its end; the launcher needs no more messages either.
    child.channel?.unref();
    this.ready = ready;
    return ready;
  }

  /**
   * Sends the signal and resolves how the process ended. A process that has
   * not exited termGraceMs after SIGTERM is killed (its record then shows
   * SIGKILL, not exit 0).
   */
  async signal(signal: 'SIGKILL' | 'SIGTERM', termGraceMs = 20_000): Promise<ExitRecord> {
    const child = this.child;
    if (!child) throw new Error(`${this.spec.name} is not running`);
    this.expectingExit = true;
    if (signal === 'SIGKILL') this.kills++;
    else this.terms++;
    child.kill(signal);
    const timer = signal === 'SIGTERM' ? setTimeout(() => child.kill('SIGKILL'), termGraceMs) : undefined;
    const exit = await this.exited!;
    clearTimeout(timer);
    return exit;
  }

  /** Graceful stop (SIGTERM: drain, flush, close), SIGKILL after graceMs; nothing when not running. */
  async stop(graceMs = 20_000): Promise<void> {
    if (this.child) await this.signal('SIGTERM', graceMs);
  }
}

export interface SharedFiles {
  /** Environment that points every server at the shared keys (and certificates). */
  env: Record<string, string>;
  keysDir: string;
  certsDir?: string;
}

/**
 * What the servers of one system share, made once before any of them starts
 * (servers never create keys, so replicas cannot race to): the keys in
 * <dir>/keys, and with tls, a development CA and the certificates of the
 * given identities in <dir>/certs. Existing files are kept.
 */
export async function prepareSharedFiles(
  dir: string,
  tls?: { issuerId: string; authorizerId: string; terminalIds: string[] },
): Promise<SharedFiles & { written: string[] }> {
  const keysDir = join(dir, 'keys');
  const keys = ensureAllKeys(keysDir);
  const env: Record<string, string> = {
    TAPCREDIT_DATA_DIR: dir,
    TAPCREDIT_MASTER_KEY_FILE: keys.masterKeyFile,
    TAPCREDIT_SIGNING_KEY_FILE: keys.signingKeyFile,
    TAPCREDIT_ISSUER_PUBLIC_KEY_FILE: keys.publicKeyFile,
    TAPCREDIT_HOLDER_KEY_FILE: keys.holderKeyFile,
  };
  if (!tls) return { env, keysDir, written: [] };
  const certsDir = join(dir, 'certs');
  const written = await ensureDevPki(certsDir, tls);
  return { env: { ...env, TAPCREDIT_CERTS_DIR: certsDir }, keysDir, certsDir, written };
}
