// The system under load as the operator runs it: the authorizer, the issuer
// and M terminals as child processes (common/launcher.ts, as `npm start`
// runs them), each with its own SQLite file in a fresh data directory (with
// --postgres, the issuer and the authorizer on PostgreSQL) and development
// keys; over mTLS with a development CA by default, or plaintext on loopback
// (--insecure). Each child's log goes to <dir>/logs. The bench reads each
// child's peak RSS (VmHWM) and CPU time from /proc.
import { mkdirSync, readFileSync } from 'node:fs';
import { freePort, freePorts } from '../common/ports.js';
import { join } from 'node:path';
import type { ChannelCredentials } from '@grpc/grpc-js';
import type { Role } from '../common/identity.js';
import { identityFile } from '../common/identity.js';
import { loadMasterKey } from '../common/keys.js';
import { ROOT, ServerProcess, defaultRuntime, prepareSharedFiles, type SharedFiles } from '../common/launcher.js';
import { channelCredentials, loadTls, type TlsConfig } from '../common/tls.js';

export { freePort, ROOT, ServerProcess };

export const ISSUER_ID = 'issuer-1';
export const AUTHORIZER_ID = 'authorizer-1';
export const ISSUER_CODE = 'CITY1';
export const CURRENCY = 'CNY';


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
  readonly masterKey: Buffer;
  readonly certsDir: string;
  private readonly identities = new Map<string, TlsConfig>();

  private constructor(
    readonly opts: ClusterOptions,
    ports: { authorizer: number; issuer: number; terminals: number[] },
    terminalIds: string[],
    shared: SharedFiles,
  ) {
    const { dir } = opts;
    this.masterKey = loadMasterKey(shared.env.TAPCREDIT_MASTER_KEY_FILE);
    this.certsDir = join(dir, 'certs');
    const output = { logDir: join(dir, 'logs') };
    const env: Record<string, string> = {
      ...shared.env,
      LOG_LEVEL: opts.logLevel,
      ISSUER_ID,
      AUTHORIZER_ID,
      ISSUER_CODE,
      CURRENCY,
    };
    const common = [...(opts.tls ? [] : ['--insecure']), '--metrics-port', '0'];
    // bench/profile-hook.ts profiles a server between two SIGUSR2 (see Cluster.toggleProfiles).
    const nodeArgs = [
      // The hook is TypeScript: tsx loads it even when the servers run from dist/.
      ...(opts.profileDir ? [...(defaultRuntime() === 'dist' ? ['--import', 'tsx'] : []), '--import', join(ROOT, 'bench', 'profile-hook.ts')] : []),
      // V8 grows its heap lazily on a machine with memory to spare; a cap makes it collect sooner (the live heap is far smaller).
      ...(opts.heapMb ? [`--max-old-space-size=${opts.heapMb}`] : []),
    ];
    const profileEnv = (name: string): Record<string, string> =>
      opts.profileDir ? { TAPCREDIT_PROFILE_DIR: opts.profileDir, TAPCREDIT_PROFILE_NAME: name } : {};
    const flag = (name: string, value: number | undefined) => (value === undefined ? [] : [`--${name}`, String(value)]);
    const hops = opts.hops ?? {};
    this.authorizer = new ServerProcess({
      name: 'authorizer',
      entry: 'authorizer/main',
      args: [
        ...common,
        '--port', String(ports.authorizer),
        ...(opts.databaseUrls ? ['--database-url', opts.databaseUrls.authorizer] : []),
        '--issuer-addresses', `${ISSUER_ID}=127.0.0.1:${ports.issuer}`,
        ...flag('settlement-batch-size', hops.settlementBatchSize),
        ...flag('settlement-window-ms', hops.settlementWindowMs),
        ...flag('settlement-concurrency', hops.settlementConcurrency),
      ],
      env: { ...env, ...profileEnv('authorizer') },
      output,
      nodeArgs,
    });
    this.issuer = new ServerProcess({
      name: 'issuer',
      entry: 'issuer/main',
      args: [
        ...common,
        '--port', String(ports.issuer),
        ...(opts.databaseUrls ? ['--database-url', opts.databaseUrls.issuer] : []),
        '--authorizer-address', `127.0.0.1:${ports.authorizer}`,
        ...flag('deduct-batch-size', hops.deductBatchSize),
        ...flag('deduct-window-ms', hops.deductWindowMs),
        ...flag('deduct-concurrency', hops.deductConcurrency),
      ],
      env: { ...env, ...opts.issuerEnv, ...profileEnv('issuer') },
      output,
      nodeArgs,
    });
    this.terminalIds = terminalIds;
    this.terminals = ports.terminals.map(
      (port, i) =>
        new ServerProcess({
          name: `terminal-${this.terminalIds[i]}`,
          entry: 'terminal/main',
          args: [
            ...common,
            '--port', String(port),
            '--terminal-id', this.terminalIds[i],
            '--issuer-address', `127.0.0.1:${ports.issuer}`,
            '--fare-minor-units', String(opts.fareMinorUnits),
            ...flag('forward-batch-size', hops.forwardBatchSize),
            ...flag('forward-window-ms', hops.forwardWindowMs),
          ],
          env: { ...env, ...profileEnv(`terminal-${this.terminalIds[i]}`) },
          output,
          nodeArgs,
        }),
    );
  }

  static async start(opts: ClusterOptions): Promise<Cluster> {
    mkdirSync(opts.dir, { recursive: true });
    if (opts.profileDir) mkdirSync(opts.profileDir, { recursive: true });
    const [authorizer, issuer, ...terminals] = await freePorts(2 + opts.terminals);
    const ports = { authorizer, issuer, terminals };
    const terminalIds = terminals.map((_, i) => terminalIdOf(i + 1));
    // Keys (and certificates) made once, before any server starts.
    const shared = await prepareSharedFiles(
      opts.dir,
      opts.tls ? { issuerId: ISSUER_ID, authorizerId: AUTHORIZER_ID, terminalIds: [...terminalIds, ...opts.virtualTerminals] } : undefined,
    );
    const cluster = new Cluster(opts, ports, terminalIds, shared);
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
    return Object.fromEntries(this.all.map((s) => [s.spec.name, s.pid ? processFigures(s.pid) : undefined]));
  }

  /** Terminals first (they forward to the issuer), then the issuer, then the authorizer. */
  async stop(): Promise<void> {
    await Promise.all(this.terminals.map((t) => t.stop()));
    await this.issuer.stop();
    await this.authorizer.stop();
  }
}
