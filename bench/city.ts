// A city's gates as the back office sees them: virtual terminals that accept
// taps (each a real card's zero-amount debit, proven with the card's own key,
// stamped with the time of ACCEPT) into an outbox, and forward the outbox to
// the issuer in TapReport batches, one call at a time each, as a terminal's
// forwarder does. Thousands of real gates run on their own hardware; here
// the generator plays their forwarders so that the two cores go to the
// issuer and the authorizer, whose end-to-end capacity is what is measured.
// Taps are accepted at a steady rate (open loop: gates do not slow down when
// the back office does), or with rate 0 as fast as the back office carries
// them end to end: a forwarder accepts a full batch right before each call
// while fewer than maxInFlight taps are accepted but not yet final (settled
// or declined), so the drive settles at the sustainable rate with a bounded
// lag instead of flooding the issuer's ingest and starving its debits.
import type { ChannelCredentials } from '@grpc/grpc-js';
import { callUnary } from '../common/rpc.js';
import { IssuerServiceClient, TapReportStatus } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';
import type { TapFactory } from './ingest.js';
import { nowMs } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';


export interface CityOptions {
  address: string;
  terminals: { terminalId: string; credentials: ChannelCredentials }[];
  factory: TapFactory;
  durationMs: number;
  /** Taps per second over all virtual terminals; 0: as fast as the issuer takes them. */
  rate: number;
  /** Most taps per TapReport call (a terminal's forward batch size). */
  batchSize: number;
  /** With rate 0: most taps accepted but not yet final, and how many of the drive's taps are final so far. */
  maxInFlight?: number;
  finalSoFar?: () => number;
  onTick?: (stats: CityStats, elapsedMs: number) => void;
}

export class CityStats {
  accepted = 0;
  reported = 0;
  /** Results other than STORED, and failed calls. */
  notStored = 0;
  failedCalls = 0;
  readonly acceptedPerSecond: number[] = [];
  startedAt = 0;
  endedAt = 0;
  /** Taps still in the virtual terminals' outboxes when the drive ended (sent afterwards). */
  leftInOutboxes = 0;
}

export async function driveCity(opts: CityOptions): Promise<CityStats> {
  const stats = new CityStats();
  const clients = opts.terminals.map((t) => new IssuerServiceClient(opts.address, t.credentials));
  await Promise.all(clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())))));
  const outboxes: Tap[][] = opts.terminals.map(() => []);
  const started = nowMs();
  stats.startedAt = Date.now();
  const until = started + opts.durationMs;
  let running = true;

  const accept = (i: number, count: number) => {
    const taps = opts.factory.build(opts.terminals[i].terminalId, count);
    outboxes[i].push(...taps);
    stats.accepted += count;
    const second = Math.floor((nowMs() - started) / 1000);
    stats.acceptedPerSecond[second] = (stats.acceptedPerSecond[second] ?? 0) + count;
  };

  // Open loop: every 10 ms each virtual terminal accepts the taps due by then.
  const gates = async () => {
    const perTerminal = opts.rate / opts.terminals.length;
    const due = new Array(opts.terminals.length).fill(0);
    let last = nowMs();
    while (nowMs() < until) {
      await sleep(10);
      const now = Math.min(nowMs(), until);
      for (let i = 0; i < due.length; i++) {
        due[i] += ((now - last) / 1000) * perTerminal;
        const whole = Math.floor(due[i]);
        if (whole > 0) {
          accept(i, whole);
          due[i] -= whole;
        }
      }
      last = now;
    }
  };

  const forwarder = async (i: number) => {
    const client = clients[i];
    const terminalId = opts.terminals[i].terminalId;
    while (running || outboxes[i].length > 0) {
      if (opts.rate === 0 && running && stats.accepted - (opts.finalSoFar?.() ?? 0) < (opts.maxInFlight ?? Infinity)) accept(i, opts.batchSize);
      if (outboxes[i].length === 0) {
        await sleep(5);
        continue;
      }
      const batch = outboxes[i].slice(0, opts.batchSize);
      try {
        const response = await callUnary(client, client.tapReport, { terminalId, taps: batch }, 60_000);
        outboxes[i].splice(0, batch.length);
        stats.reported += batch.length;
        stats.notStored += response.results.filter((r) => r.status !== TapReportStatus.TAP_REPORT_STATUS_STORED).length;
      } catch {
        stats.failedCalls++;
        await sleep(100);
      }
    }
  };

  const ticker = setInterval(() => opts.onTick?.(stats, nowMs() - started), 1000);
  try {
    const forwarders = opts.terminals.map((_, i) => forwarder(i));
    if (opts.rate > 0) await gates();
    else await sleep(opts.durationMs);
    stats.endedAt = Date.now();
    stats.leftInOutboxes = outboxes.reduce((n, o) => n + o.length, 0);
    running = false;
    await Promise.all(forwarders);
  } finally {
    clearInterval(ticker);
    for (const c of clients) c.close();
  }
  for (let i = 0; i < stats.acceptedPerSecond.length; i++) stats.acceptedPerSecond[i] ??= 0;
  return stats;
}
