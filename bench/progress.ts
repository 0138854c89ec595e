// A one-line progress bar on a terminal (redrawn in place), or a plain line
// every few seconds when the output is not a TTY (CI logs, the test).

export class Progress {
  private lastPlain = 0;
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly quiet = false,
  ) {}

  /** Draws `label [####....] detail` for a fraction done in 0..1. */
  update(label: string, fraction: number, detail: string): void {
    if (this.quiet) return;
    const f = Math.max(0, Math.min(1, fraction));
    if (this.out.isTTY) {
      const width = 30;
      const filled = Math.round(f * width);
      const line = `${label.padEnd(10)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(f * 100)).padStart(3)}% ${detail}`;
      this.out.write(`\r${line.slice(0, (this.out.columns ?? 120) - 1)}\x1b[K`);
      this.drawn = true;
    } else if (Date.now() - this.lastPlain >= 5000 || f >= 1) {
      this.lastPlain = Date.now();
      this.out.write(`${label} ${Math.round(f * 100)}% ${detail}\n`);
    }
  }

  /** Ends the current bar's line. */
  done(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
    this.lastPlain = 0;
  }

  /** A line of its own (after ending any bar). */
  log(message: string): void {
    if (this.quiet) return;
    this.done();
    this.out.write(`${message}\n`);
  }
}
