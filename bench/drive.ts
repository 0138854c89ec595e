// Cards presented at the terminals (TerminalService.PresentCard with the
// phone app's identity, as the gate's reader stands in for it): the bench
// plays each card (common/card-emulator.ts) and answers the terminal's commands.
// Each terminal is driven by `readers` readers at once; a reader presents one
// card at a time, from the pool of free cards. Closed loop (as fast as the
// answers come) unless a rate is given, then taps are paced to that rate
// over all readers.
import { declineReasonToJSON, Decision, type TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import { presentCardImage } from '../common/present-card.js';
import type { CardPool, Rider } from './riders.js';
import { Latencies, nowMs } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';


export interface DriveOptions {
  pool: CardPool;
  /** One client per terminal. */
  terminals: TerminalServiceClient[];
  readersPerTerminal: number;
  durationMs: number;
  /** Taps per second over all readers; 0: closed loop. A function of the elapsed fraction (0..1) varies it, e.g. a day's peaks. */
  rate: number | ((fraction: number) => number);
  /** Called about once a second with the figures so far. */
  onTick?: (d: DriveStats, elapsedMs: number) => void;
  /** Picks the card a reader presents (default: the next free card of the pool). */
  pick?: (pool: CardPool) => Rider | undefined;
}

export class DriveStats {
  presented = 0;
  accepted = 0;
  readonly declined: Record<string, number> = {};
  readonly errors: Record<string, number> = {};
  readonly latency = new Latencies();
  /** Accepted taps in each second of the drive. */
  readonly acceptedPerSecond: number[] = [];
  /** Epoch ms of the drive's start and end. */
  startedAt = 0;
  endedAt = 0;
}

/** A paced clock: hands out the times of the next taps at the rate asked. */
class Pacer {
  private next = nowMs();
  constructor(private readonly rate: (fraction: number) => number) {}

  /** Milliseconds to wait before the next tap (0 when late). */
  delay(fraction: number): number {
    const now = nowMs();
    const rate = Math.max(0.01, this.rate(fraction));
    // Never bank more than a second of missed taps: a stalled system is not flooded afterwards.
    if (this.next < now - 1000) this.next = now - 1000;
    const at = this.next;
    this.next += 1000 / rate;
    return Math.max(0, at - now);
  }
}

export async function drive(opts: DriveOptions): Promise<DriveStats> {
  const stats = new DriveStats();
  stats.startedAt = Date.now();
  const started = nowMs();
  const until = started + opts.durationMs;
  const pacer = opts.rate === 0 ? undefined : new Pacer(typeof opts.rate === 'number' ? () => opts.rate as number : opts.rate);
  const fraction = () => Math.min(1, (nowMs() - started) / opts.durationMs);
  const pick = opts.pick ?? ((pool: CardPool) => pool.take());

  const ticker = setInterval(() => opts.onTick?.(stats, nowMs() - started), 1000);
  const reader = async (client: TerminalServiceClient) => {
    while (nowMs() < until) {
      if (pacer) {
        const wait = pacer.delay(fraction());
        if (wait > 0) await sleep(wait);
        if (nowMs() >= until) break;
      }
      const rider = pick(opts.pool);
      if (!rider) {
        await sleep(1);
        continue;
      }
      const t0 = nowMs();
      try {
        const response = await presentCardImage(client, rider.card, 10_000);
        stats.latency.add(nowMs() - t0);
        stats.presented++;
        rider.card = response.card;
        if (response.decision === Decision.DECISION_ACCEPT) {
          stats.accepted++;
          const second = Math.floor((nowMs() - started) / 1000);
          stats.acceptedPerSecond[second] = (stats.acceptedPerSecond[second] ?? 0) + 1;
        } else {
          const reason = declineReasonToJSON(response.declineReason).replace(/^DECLINE_REASON_/, '');
          stats.declined[reason] = (stats.declined[reason] ?? 0) + 1;
        }
      } catch (err) {
        // The card keeps the counter it reached, as a real card does.
        rider.card = (err as { card?: typeof rider.card }).card ?? rider.card;
        const code = String((err as { code?: number }).code ?? 'UNKNOWN');
        stats.errors[code] = (stats.errors[code] ?? 0) + 1;
      } finally {
        opts.pool.give(rider);
      }
    }
  };
  try {
    await Promise.all(opts.terminals.flatMap((client) => Array.from({ length: opts.readersPerTerminal }, () => reader(client))));
  } finally {
    clearInterval(ticker);
  }
  stats.endedAt = Date.now();
  for (let i = 0; i < stats.acceptedPerSecond.length; i++) stats.acceptedPerSecond[i] ??= 0;
  return stats;
}
