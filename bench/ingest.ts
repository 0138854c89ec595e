// IssuerService.TapReport driven directly: valid taps of enrolled cards,
// built beforehand as a terminal would (the card's zero-amount debit with the
// card's own key, at a virtual terminal), sent in batches by `senders`
// virtual terminals at once, each one batch at a time like a terminal's
// forwarder. The same batches go to the bare echo server for the transport
// baseline.
import type { ChannelCredentials } from '@grpc/grpc-js';
import { newTerminalRandom, zeroAmountDebit } from '../common/card.js';
import { callUnary } from '../common/rpc.js';
import { IssuerServiceClient, TapReportStatus, tapReportStatusToJSON } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';
import { CURRENCY } from './cluster.js';
import type { Rider } from './riders.js';
import { Latencies, nowMs, type LatencySummary } from './stats.js';

/**
 * Builds taps at virtual terminals, each taking the cards of its own share
 * of the riders round robin (a card is at one station at a time, so its taps
 * reach the issuer in counter order, as in a city); advances each card's counter.
 */
export class TapFactory {
  private readonly sequences = new Map<string, bigint>();
  private readonly shares = new Map<string, { riders: Rider[]; next: number }>();

  constructor(
    riders: Rider[],
    terminalIds: string[],
    private readonly fareMinorUnits: number,
  ) {
    terminalIds.forEach((id, k) => this.shares.set(id, { riders: riders.filter((_, i) => i % terminalIds.length === k), next: 0 }));
  }

  build(terminalId: string, count: number): Tap[] {
    const taps: Tap[] = [];
    const share = this.shares.get(terminalId)!;
    let sequence = this.sequences.get(terminalId) ?? 1n;
    for (let i = 0; i < count; i++) {
      const rider = share.riders[share.next++ % share.riders.length];
      const { card, proof } = zeroAmountDebit(rider.card, { terminalId, terminalSequence: sequence, terminalRandom: newTerminalRandom() });
      rider.card = card;
      taps.push({
        tapId: `${terminalId}:${sequence}`,
        terminalId,
        terminalSequence: sequence.toString(),
        cardId: card.cardId,
        agreementId: rider.agreementId,
        fare: { currencyCode: CURRENCY, minorUnits: String(this.fareMinorUnits) },
        tappedAt: new Date(),
        proof,
      });
      sequence++;
    }
    this.sequences.set(terminalId, sequence);
    return taps;
  }
}

export interface IngestResult {
  batchSize: number;
  senders: number;
  taps: number;
  seconds: number;
  tapsPerSecond: number;
  /** Latency of one TapReport call (a whole batch). */
  callLatency: LatencySummary;
  /** Results other than STORED, by status. */
  notStored: Record<string, number>;
}

export interface Sender {
  terminalId: string;
  credentials: ChannelCredentials;
}

/**
 * Sends `batches[s]` from sender s, one call at a time per sender, all
 * senders at once; resolves the throughput over the whole run.
 */
export async function sendBatches(address: string, senders: Sender[], batches: Tap[][][], batchSize: number, deadlineMs = 60_000): Promise<IngestResult> {
  const clients = senders.map((s) => new IssuerServiceClient(address, s.credentials));
  const latency = new Latencies();
  const notStored: Record<string, number> = {};
  let taps = 0;
  try {
    // Connect first, so the TLS handshake is not counted.
    await Promise.all(clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())))));
    const t0 = nowMs();
    await Promise.all(
      clients.map(async (client, s) => {
        for (const batch of batches[s]) {
          const c0 = nowMs();
          const response = await callUnary(client, client.tapReport, { terminalId: senders[s].terminalId, taps: batch }, deadlineMs);
          latency.add(nowMs() - c0);
          taps += batch.length;
          for (const r of response.results) {
            if (r.status !== TapReportStatus.TAP_REPORT_STATUS_STORED) {
              const key = tapReportStatusToJSON(r.status).replace(/^TAP_REPORT_STATUS_/, '') + (r.reason ? `:${r.reason}` : '');
              notStored[key] = (notStored[key] ?? 0) + 1;
            }
          }
        }
      }),
    );
    const seconds = (nowMs() - t0) / 1000;
    return { batchSize, senders: senders.length, taps, seconds, tapsPerSecond: taps / seconds, callLatency: latency.summary(), notStored };
  } finally {
    for (const c of clients) c.close();
  }
}

/** Splits taps into batches of size. */
export function batchesOf<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
