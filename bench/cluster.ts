// The system under load as the operator runs it: the authorizer, the issuer
// and M terminals as child processes started from their main.ts (as `npm
// start` does), each with its own SQLite file in a fresh data directory (with
// --postgres, the issuer and the authorizer on PostgreSQL) and development
// keys; over mTLS with a development CA by default, or plaintext on loopback
// (--insecure). Each child's log goes to <dir>/logs. The bench reads each
// child's peak RSS (VmHWM) and CPU time from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { accepts, freePort, freePorts } from '../common/ports.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChannelCredentials } from '@grpc/grpc-js';
import type { Role } from '../common/identity.js';
import { identityFile } from '../common/identity.js';
import { ensureDevKeys, loadMasterKey, type KeyFiles } from '../common/keys.js';
import { ensureDevPki } from '../common/pki.js';
import { channelCredentials, loadTls, type TlsConfig } from '../common/tls.js';

export { freePort };

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const ISSUER_ID = 'issuer-1';
export const AUTHORIZER_ID = 'authorizer-1';
export const ISSUER_CODE = 'CITY1';
export const CURRENCY = 'CNY';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/** What /proc says about a process: peak and current resident set, CPU seconds used (all its threads), of them in the kernel. */
export interface ProcessFigures {
  peakRssMb: number;
  rssMb: number;
  cpuSeconds: number;
  systemSeconds: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** Reads /proc/<pid>/status (VmHWM, VmRSS) and /proc/<pid>/stat (utime + stime); undefined where /proc is missing. */
export function processFigures(pid: number): ProcessFigures | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    // Fields after the command name (which may hold spaces) start at "state"; utime and stime are fields 14 and 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const [utime, stime] = [Number(rest[11]), Number(rest[12])];
    return { peakRssMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024, cpuSeconds: (utime + stime) / CLOCK_TICKS, systemSeconds: stime / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** One server as a child process. */
export class ServerProcess {
  private child: ChildProcess | undefined;
  private exit: Promise<number | null> | undefined;
  private stopping = false;
  /** Set when the process ended without being asked to. */
  crashed: string | undefined;

  constructor(
    readonly name: string,
    private readonly main: string,
    readonly port: number,
    private readonly args: string[],
    private readonly env: Record<string, string>,
    private readonly logDir: string,
    private readonly nodeArgs: string[] = [],
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(timeoutMs = 120_000): Promise<void> {
    const log = openSync(join(this.logDir, `${this.name}.log`), 'a');
    const child = spawn(process.execPath, ['--import', 'tsx', ...this.nodeArgs, join(ROOT, this.main), ...this.args], {
      cwd: ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.child = child;
    this.exit = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        if (!this.stopping) this.crashed = `${this.name} exited (${signal ?? code}); see ${join(this.logDir, `${this.name}.log`)}`;
        this.child = undefined;
        resolve(code);
      }),
    );
    const deadline = Date.now() + timeoutMs;
    while (!(await accepts(this.port))) {
      if (this.crashed) throw new Error(this.crashed);
      if (Date.now() > deadline) throw new Error(`${this.name} did not listen on ${this.port} within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  figures(): ProcessFigures | undefined {
    return this.child?.pid ? processFigures(this.child.pid) : undefined;
  }

  /** SIGTERM (graceful shutdown: drain, flush, close), SIGKILL after graceMs. */
  async stop(graceMs = 20_000): Promise<void> {
    if (!this.child) return;
    this.stopping = true;
    const child = this.child;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exit;
    clearTimeout(timer);
  }
}

/** Batch size and window of each outbox hop, passed to the servers as flags. */
export interface HopSettings {
  forwardBatchSize?: number;
  forwardWindowMs?: number;
  deductBatchSize?: number;
  deductWindowMs?: number;
  settlementBatchSize?: number;
  settlementWindowMs?: number;
  deductConcurrency?: number;
  settlementConcurrency?: number;
}

export interface ClusterOptions {
  /** Data directory: SQLite files, keys, certificates, logs. */
  dir: string;
  terminals: number;
  /** Extra terminal identities (certificates only, no server) for direct TapReport calls. */
  virtualTerminals: string[];
  /** mTLS with development certificates (default), or plaintext on loopback. */
  tls: boolean;
  logLevel: string;
  /** Write each server's CPU profiles into this directory (bench/profile-hook.ts). */
  profileDir?: string;
  /** V8 old-space cap of each server in MB (node --max-old-space-size); Node's default when unset. */
  heapMb?: number;
  hops?: HopSettings;
  /** Terminal fare in minor units. */
  fareMinorUnits: number;
  /** Extra environment of the issuer (e.g. a daily fare cap). */
  issuerEnv?: Record<string, string>;
  /** postgres:// URLs of the issuer's and the authorizer's databases; SQLite files in dir when unset. */
  databaseUrls?: { issuer: string; authorizer: string };
}

export const terminalIdOf = (i: number) => `T${String(i).padStart(4, '0')}`;

/** The three kinds of server, started and stopped together. */
export class Cluster {
  readonly authorizer: ServerProcess;
  readonly issuer: ServerProcess;
  readonly terminals: ServerProcess[];
  readonly terminalIds: string[];
  readonly keys: KeyFiles;
  readonly masterKey: Buffer;
  readonly certsDir: string;
  private readonly identities = new Map<string, TlsConfig>();

  private constructor(
    readonly opts: ClusterOptions,
    ports: { authorizer: number; issuer: number; terminals: number[] },
  ) {
    const { dir } = opts;
    this.keys = ensureDevKeys(join(dir, 'keys'));
    this.masterKey = loadMasterKey(this.keys.masterKeyFile);
    this.certsDir = join(dir, 'certs');
    const logDir = join(dir, 'logs');
    mkdirSync(logDir, { recursive: true });
    const env: Record<string, string> = {
      TAPCREDIT_DATA_DIR: dir,
      TAPCREDIT_CERTS_DIR: this.certsDir,
      TAPCREDIT_MASTER_KEY_FILE: this.keys.masterKeyFile,
      TAPCREDIT_SIGNING_KEY_FILE: this.keys.signingKeyFile,
      TAPCREDIT_ISSUER_PUBLIC_KEY_FILE: this.keys.publicKeyFile,
      LOG_LEVEL: opts.logLevel,
      ISSUER_ID,
      AUTHORIZER_ID,
      ISSUER_CODE,
      CURRENCY,
    };
    const common = [...(opts.tls ? [] : ['--insecure']), '--metrics-port', '0'];
    // bench/profile-hook.ts profiles a server between two SIGUSR2 (see Cluster.toggleProfiles).
    const nodeArgs = [
      ...(opts.profileDir ? ['--import', join(ROOT, 'bench', 'profile-hook.ts')] : []),
      // V8 grows its heap lazily on a machine with memory to spare; a cap makes it collect sooner (the live heap is far smaller).
      ...(opts.heapMb ? [`--max-old-space-size=${opts.heapMb}`] : []),
    ];
    const profileEnv = (name: string): Record<string, string> =>
      opts.profileDir ? { TAPCREDIT_PROFILE_DIR: opts.profileDir, TAPCREDIT_PROFILE_NAME: name } : {};
    const flag = (name: string, value: number | undefined) => (value === undefined ? [] : [`--${name}`, String(value)]);
    const hops = opts.hops ?? {};
    this.authorizer = new ServerProcess(
      'authorizer',
      'authorizer/main.ts',
      ports.authorizer,
      [
        ...common,
        '--port', String(ports.authorizer),
        ...(opts.databaseUrls ? ['--database-url', opts.databaseUrls.authorizer] : []),
        '--issuer-addresses', `${ISSUER_ID}=127.0.0.1:${ports.issuer}`,
        ...flag('settlement-batch-size', hops.settlementBatchSize),
        ...flag('settlement-window-ms', hops.settlementWindowMs),
        ...flag('settlement-concurrency', hops.settlementConcurrency),
      ],
      { ...env, ...profileEnv('authorizer') },
      logDir,
      nodeArgs,
    );
    this.issuer = new ServerProcess(
      'issuer',
      'issuer/main.ts',
      ports.issuer,
      [
        ...common,
        '--port', String(ports.issuer),
        ...(opts.databaseUrls ? ['--database-url', opts.databaseUrls.issuer] : []),
        '--authorizer-address', `127.0.0.1:${ports.authorizer}`,
        ...flag('deduct-batch-size', hops.deductBatchSize),
        ...flag('deduct-window-ms', hops.deductWindowMs),
        ...flag('deduct-concurrency', hops.deductConcurrency),
      ],
      { ...env, ...opts.issuerEnv, ...profileEnv('issuer') },
      logDir,
      nodeArgs,
    );
    this.terminalIds = ports.terminals.map((_, i) => terminalIdOf(i + 1));
    this.terminals = ports.terminals.map(
      (port, i) =>
        new ServerProcess(
          `terminal-${this.terminalIds[i]}`,
          'terminal/main.ts',
          port,
          [
            ...common,
            '--port', String(port),
            '--terminal-id', this.terminalIds[i],
            '--issuer-address', `127.0.0.1:${ports.issuer}`,
            '--fare-minor-units', String(opts.fareMinorUnits),
            ...flag('forward-batch-size', hops.forwardBatchSize),
            ...flag('forward-window-ms', hops.forwardWindowMs),
          ],
          { ...env, ...profileEnv(`terminal-${this.terminalIds[i]}`) },
          logDir,
          nodeArgs,
        ),
    );
  }

  static async start(opts: ClusterOptions): Promise<Cluster> {
    mkdirSync(opts.dir, { recursive: true });
    if (opts.profileDir) mkdirSync(opts.profileDir, { recursive: true });
    const [authorizer, issuer, ...terminals] = await freePorts(2 + opts.terminals);
    const ports = { authorizer, issuer, terminals };
    const cluster = new Cluster(opts, ports);
    if (opts.tls) {
      await ensureDevPki(cluster.certsDir, {
        issuerId: ISSUER_ID,
        authorizerId: AUTHORIZER_ID,
        terminalIds: [...cluster.terminalIds, ...opts.virtualTerminals],
      });
    }
    try {
      // The authorizer and the issuer first (terminals connect to the issuer), each ready before the next.
      await cluster.authorizer.start();
      await cluster.issuer.start();
      await Promise.all(cluster.terminals.map((t) => t.start()));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get all(): ServerProcess[] {
    return [this.authorizer, this.issuer, ...this.terminals];
  }

  /** A server that exited without being asked to, if any. */
  crashed(): string | undefined {
    return this.all.find((s) => s.crashed)?.crashed;
  }

  /** The mTLS identity of a role (e.g. ops, phone, terminal BENCH1); undefined in plaintext. */
  identity(role: Role, name: string): TlsConfig | undefined {
    if (!this.opts.tls) return undefined;
    const file = identityFile(role, name);
    let tls = this.identities.get(file);
    if (!tls) {
      tls = loadTls({ ca: join(this.certsDir, 'ca.pem'), cert: join(this.certsDir, `${file}.pem`), key: join(this.certsDir, `${file}.key`) });
      this.identities.set(file, tls);
    }
    return tls;
  }

  /** Client credentials calling `server` (a role) as `as`. */
  credentials(as: { role: Role; name: string }, server: Role): ChannelCredentials {
    return channelCredentials(this.identity(as.role, as.name), { role: server });
  }

  /** Starts, or stops and writes, each server's CPU profile (when started with profileDir). */
  toggleProfiles(): void {
    if (!this.opts.profileDir) return;
    for (const s of this.all) if (s.pid) process.kill(s.pid, 'SIGUSR2');
  }

  figures(): Record<string, ProcessFigures | undefined> {
    return Object.fromEntries(this.all.map((s) => [s.name, s.figures()]));
  }

  /** Terminals first (they forward to the issuer), then the issuer, then the authorizer. */
  async stop(): Promise<void> {
    await Promise.all(this.terminals.map((t) => t.stop()));
    await this.issuer.stop();
    await this.authorizer.stop();
  }
}
