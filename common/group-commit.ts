// Group commit: callers submit work one at a time and each waits for its own
// durable commit. A submission arriving while no commit runs is committed at
// once; those arriving during a commit are committed together right after
// it, in one transaction and one fsync, in submission order. A lone caller
// waits for nothing; under load, callers share the fsync instead of queueing
// for one each (SQLite has one writer, so queueing is what they would do).

export interface GroupCommitOptions<I, O> {
  /** Commits the items together (one transaction); resolves one output per item, in order. */
  commit: (items: I[]) => Promise<O[]>;
  /** Most weight committed in one group; a single heavier item still goes alone. */
  maxWeight: number;
  /** An item's weight (default 1), e.g. the taps of a report. */
  weight?: (item: I) => number;
}

interface Waiting<I, O> {
  item: I;
  weight: number;
  resolve: (output: O) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit<I, O> {
  private waiting: Waiting<I, O>[] = [];
  private running = false;
  /** Groups committed and items in them, for metrics and tests. */
  readonly stats = { groups: 0, items: 0 };

  constructor(private readonly opts: GroupCommitOptions<I, O>) {}

  /** Resolves the item's output once its group is committed; rejects with the error of its own commit. */
  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.waiting.push({ item, weight: this.opts.weight?.(item) ?? 1, resolve, reject });
      if (!this.running) void this.run();
    });
  }

  private nextGroup(): Waiting<I, O>[] {
    let n = 1;
    let weight = this.waiting[0].weight;
    while (n < this.waiting.length && weight + this.waiting[n].weight <= this.opts.maxWeight) weight += this.waiting[n++].weight;
    return this.waiting.splice(0, n);
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        const group = this.nextGroup();
        try {
          const outputs = await this.opts.commit(group.map((w) => w.item));
          this.stats.groups++;
          this.stats.items += group.length;
          group.forEach((w, i) => w.resolve(outputs[i]));
        } catch (err) {
          if (group.length === 1) {
            group[0].reject(err);
            continue;
          }
          // One bad item must not fail the others: commit each alone, so each caller gets its own outcome.
          for (const w of group) {
            await this.opts.commit([w.item]).then(
              ([output]) => w.resolve(output),
              (e: unknown) => w.reject(e),
            );
          }
        }
      }
    } finally {
      this.running = false;
    }
  }
}
