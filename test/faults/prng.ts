// A small seeded PRNG (mulberry32) with independent named streams, so the
// kill schedule, each proxy's faults and the driver's choices each draw from
// their own sequence: replaying a seed replays every decision, whatever the
// others consumed.

/** 32-bit hash of a string (FNV-1a), to derive stream seeds. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Prng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A uniform integer in [low, high]. */
  int(low: number, high: number): number {
    return low + Math.floor(this.next() * (high - low + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /** An independent stream for one component, derived from this stream's seed and a label. */
  fork(label: string): Prng {
    return new Prng(hash32(`${this.seed}/${label}`));
  }
}

/** A fresh random seed (when none is given). */
export const randomSeed = () => Math.floor(Math.random() * 2 ** 31);
