// The three servers as child processes, each started from its main.ts with
// flags (port, database, fast outbox intervals) and the shared development
// keys, so they can be killed (SIGKILL), stopped (SIGTERM) and restarted on
// the same port and database. Each child's output goes to a log file.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { accepts } from '../../common/ports.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


// Children never outlive the test process, whatever way it ends.
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface ServiceSpec {
  /** e.g. "issuer", "terminal-T1". */
  name: string;
  /** main.ts to run, relative to the repository root. */
  main: string;
  port: number;
  args: string[];
  env: Record<string, string>;
}

export interface ExitRecord {
  name: string;
  code: number | null;
  signal: string | null;
  expected: boolean;
}

/** One server as a child process that can be killed and started again. */
export class ServiceProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<ExitRecord> | undefined;
  private expectingExit = false;
  starts = 0;
  kills = 0;
  terms = 0;

  constructor(
    readonly spec: ServiceSpec,
    private readonly logDir: string,
    /** Called when the process exits without being asked to (a crash). */
    private readonly onUnexpectedExit: (exit: ExitRecord) => void,
  ) {
    mkdirSync(logDir, { recursive: true });
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** Spawns the server and resolves once it accepts connections. */
  async start(timeoutMs = 60_000): Promise<void> {
    if (this.child) throw new Error(`${this.spec.name} is already running`);
    const log = openSync(join(this.logDir, `${this.spec.name}.log`), 'a');
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, this.spec.main), ...this.spec.args], {
      cwd: ROOT,
      env: { ...process.env, ...this.spec.env },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    live.add(child);
    this.child = child;
    this.starts++;
    this.expectingExit = false;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        const record = { name: this.spec.name, code, signal, expected: this.expectingExit };
        if (this.child === child) this.child = undefined;
        if (!record.expected) this.onUnexpectedExit(record);
        resolve(record);
      });
    });
    const deadline = Date.now() + timeoutMs;
    while (!(await accepts(this.spec.port))) {
      if (this.child !== child) throw new Error(`${this.spec.name} exited while starting (see ${this.logDir}/${this.spec.name}.log)`);
      if (Date.now() > deadline) throw new Error(`${this.spec.name} did not listen on ${this.spec.port} within ${timeoutMs} ms`);
      await sleep(25);
    }
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
}
