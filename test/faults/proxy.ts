// A loopback TCP proxy that sits on one hop between two servers and, while
// its faults are on, breaks the hop the way networks do: it cuts
// connections, delays traffic, stalls a connection (its bytes are dropped)
// and then cuts it, and refuses new connections for a while. gRPC keeps one
// long-lived HTTP/2 connection per channel, so faults are injected on a
// clock (a seeded schedule), not per connection.
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Prng } from './prng.js';

export interface ProxyFaultCounts {
  connections: number;
  /** Connections destroyed on the spot. */
  cuts: number;
  /** Windows during which every chunk was delayed. */
  delays: number;
  /** Connections stalled (bytes dropped) and then cut. */
  drops: number;
  /** Connections refused during a refusal window. */
  refusals: number;
}

interface Pipe {
  client: Socket;
  upstream: Socket;
  /** Set while stalled: chunks are dropped until the connection is cut. */
  stalled: boolean;
}

/** The mean gap between two faults on a hop, in ms. */
export const DEFAULT_MEAN_FAULT_GAP_MS = 1000;

export class FaultProxy {
  readonly counts: ProxyFaultCounts = { connections: 0, cuts: 0, delays: 0, drops: 0, refusals: 0 };
  private server: Server | undefined;
  private readonly pipes = new Set<Pipe>();
  private faultsOn = false;
  private faultTimer: NodeJS.Timeout | undefined;
  private latencyMs = 0;
  private latencyUntil = 0;
  private refuseUntil = 0;
  /** While set, bytes from the server are dropped: requests arrive and are processed, answers are lost. */
  dropAnswers = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly name: string,
    private readonly targetPort: number,
    private readonly prng: Prng,
    private readonly meanGapMs = DEFAULT_MEAN_FAULT_GAP_MS,
  ) {}

  /** Listens on 127.0.0.1 (port 0 picks one); resolves the port. */
  listen(port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = createServer((client) => this.accept(client));
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        this.server = server;
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  /** Starts or stops injecting faults; stopping also ends a delay or refusal window. */
  setFaults(on: boolean): void {
    this.faultsOn = on;
    clearTimeout(this.faultTimer);
    if (on) this.scheduleFault();
    else {
      this.latencyUntil = 0;
      this.refuseUntil = 0;
    }
  }

  async close(): Promise<void> {
    this.setFaults(false);
    for (const t of this.timers) clearTimeout(t);
    for (const p of this.pipes) this.cut(p);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  private scheduleFault(): void {
    // Exponential gaps: faults arrive as a Poisson process.
    const gap = Math.max(1, Math.round(-Math.log(1 - this.prng.next()) * this.meanGapMs));
    this.faultTimer = setTimeout(() => {
      if (!this.faultsOn) return;
      this.injectFault();
      this.scheduleFault();
    }, gap);
  }

  private injectFault(): void {
    const now = Date.now();
    const roll = this.prng.next();
    const pipes = [...this.pipes];
    const victim = pipes.length > 0 ? pipes[this.prng.int(0, pipes.length - 1)] : undefined;
    if (roll < 0.35) {
      if (!victim) return;
      this.counts.cuts++;
      this.cut(victim);
    } else if (roll < 0.65) {
      this.counts.delays++;
      this.latencyMs = this.prng.int(20, 300);
      this.latencyUntil = now + this.prng.int(200, 2000);
    } else if (roll < 0.85) {
      if (!victim || victim.stalled) return;
      this.counts.drops++;
      victim.stalled = true;
      this.later(this.prng.int(100, 1500), () => this.cut(victim));
    } else {
      this.refuseUntil = now + this.prng.int(100, 1000);
    }
  }

  private accept(client: Socket): void {
    this.counts.connections++;
    if (this.faultsOn && Date.now() < this.refuseUntil) {
      this.counts.refusals++;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(this.targetPort, '127.0.0.1');
    const pipe: Pipe = { client, upstream, stalled: false };
    this.pipes.add(pipe);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.forward(pipe, client, upstream, false);
    this.forward(pipe, upstream, client, true);
    const end = () => this.cut(pipe);
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  }

  /** Copies one direction, in order, applying the current latency. */
  private forward(pipe: Pipe, from: Socket, to: Socket, answers: boolean): void {
    const queue: { at: number; chunk: Buffer }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const flush = () => {
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0].at <= now) {
        const { chunk } = queue.shift()!;
        if (!pipe.stalled && !to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(flush, queue[0].at - now);
    };
    from.on('data', (chunk: Buffer) => {
      if (pipe.stalled || (answers && this.dropAnswers)) return; // dropped
      const now = Date.now();
      const delay = this.faultsOn && now < this.latencyUntil ? this.latencyMs : 0;
      const at = Math.max(now + delay, queue.at(-1)?.at ?? 0);
      if (at <= now && queue.length === 0) {
        if (!to.destroyed) to.write(chunk);
        return;
      }
      queue.push({ at, chunk });
      if (!timer) timer = setTimeout(flush, at - now);
    });
    from.on('end', () => {
      if (queue.length === 0) to.end();
      else this.later(queue.at(-1)!.at - Date.now() + 1, () => to.end());
    });
  }

  private cut(pipe: Pipe): void {
    if (!this.pipes.delete(pipe)) return;
    for (const s of [pipe.client, pipe.upstream]) {
      s.on('error', () => {});
      if (!s.destroyed) s.resetAndDestroy();
    }
  }
}
