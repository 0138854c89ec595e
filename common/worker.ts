// A background loop that drains an outbox: it runs step() until there is
// nothing left, then waits for the next interval or a kick(); on failure it
// backs off exponentially with full jitter. Receivers are idempotent, so a
// step that fails half way is simply run again.
import type { Logger } from './log.js';

export interface WorkerOptions {
  name: string;
  /** Wait between polls when the outbox is empty. */
  intervalMs: number;
  /** Cap of the retry backoff. */
  maxBackoffMs?: number;
  log: Logger;
}

export class Worker {
  private running = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private failures = 0;

  /** step() processes one batch and resolves to true when more work may be waiting. */
  constructor(
    private readonly step: () => Promise<boolean>,
    private readonly opts: WorkerOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Runs the next step now instead of at the end of the current wait. */
  kick(): void {
    this.wake?.();
  }

  /** Lets the current step finish, then stops. */
  async stop(): Promise<void> {
    this.running = false;
    this.kick();
    await this.loop;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    while (this.running) {
      let more = false;
      try {
        more = await this.step();
        this.failures = 0;
      } catch (err) {
        this.failures++;
        const cap = Math.min(this.opts.maxBackoffMs ?? 30_000, this.opts.intervalMs * 2 ** Math.min(this.failures, 16));
        const delay = Math.random() * cap;
        this.opts.log.warn({ worker: this.opts.name, failures: this.failures, retryInMs: Math.round(delay), err: String(err) }, 'outbox step failed');
        if (this.running) await this.sleep(delay);
        continue;
      }
      if (!more && this.running) await this.sleep(this.opts.intervalMs);
    }
  }
}
