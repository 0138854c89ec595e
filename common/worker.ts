// A background loop that drains an outbox: it runs step() until there is
// nothing left, then waits for the next interval or a kick(); on failure it
// backs off exponentially with full jitter. Receivers are idempotent, so a
// step that fails half way is simply run again.
import type { Logger } from './log.js';
import { newSpan, runInSpan } from './trace.js';

export interface WorkerOptions {
  name: string;
  /** Wait between polls when the outbox is empty. */
  intervalMs: number;
  /** Cap of the retry backoff. */
  maxBackoffMs?: number;
  /**
   * Batching window: a kick runs the next step this long after the first
   * kick instead of at once, so work arriving meanwhile joins that batch
   * (fewer, fuller batches: each costs a call and a commit). 0 (default): at once.
   */
  windowMs?: number;
  log: Logger;
}

export class Worker {
  private running = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private failures = 0;
  /** True while waiting out a backoff: kicks (new work arriving) must not cut it short. */
  private backingOff = false;
  /** Armed by the first kick of a batching window. */
  private windowTimer: NodeJS.Timeout | undefined;
  /** Set by a kick; a kick that came while a step ran means work is waiting: no idle wait after that step. */
  private kicked = false;

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

  /**
   * Runs the next step now instead of at the end of the idle wait. During a
   * backoff it does nothing: new work arriving while the receiver is down
   * (a tap accepted per second, say) must not turn the backoff into a retry
   * per kick.
   */
  kick(): void {
    if (this.backingOff) return;
    this.kicked = true;
    const windowMs = this.opts.windowMs ?? 0;
    if (windowMs <= 0) {
      this.wake?.();
      return;
    }
    // Kicks within the window ride on the first one's timer.
    this.windowTimer ??= setTimeout(() => {
      this.windowTimer = undefined;
      if (!this.backingOff) this.wake?.();
    }, windowMs);
  }

  /** Runs the next step now, even during a backoff (e.g. the receiver's address was just corrected). */
  retryNow(): void {
    this.wake?.();
  }

  /** Lets the current step finish, then stops. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.wake?.();
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
        // Each step is a trace of its own: its logs and calls name it (a batch
        // send may instead join its first item's trace, see trace.runForBatch).
        this.kicked = false;
        more = await runInSpan(newSpan(), () => this.step());
        this.failures = 0;
      } catch (err) {
        this.failures++;
        const cap = Math.min(this.opts.maxBackoffMs ?? 30_000, this.opts.intervalMs * 2 ** Math.min(this.failures, 16));
        const delay = Math.random() * cap;
        this.opts.log.warn({ worker: this.opts.name, failures: this.failures, retryInMs: Math.round(delay), err: String(err) }, 'outbox step failed');
        this.backingOff = true;
        if (this.running) await this.sleep(delay);
        this.backingOff = false;
        continue;
      }
      if (!more && !this.kicked && this.running) await this.sleep(this.opts.intervalMs);
    }
  }
}
