// Prometheus metrics (prom-client), one registry per server so that servers
// sharing a process (the integration tests) never mix their numbers. RPC
// metrics follow the names of go-grpc-prometheus, which dashboards know;
// outbox gauges are read from the database when Prometheus scrapes.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';

/** Latency buckets, seconds: a PresentCard is a few ms, a 5000-tap batch may take seconds. */
/** Longest a scrape-time read may take before its gauge is left without samples. */
const GAUGE_READ_TIMEOUT_MS = 3000;

const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  readonly rpcStarted: Counter<'grpc_service' | 'grpc_method'>;
  readonly rpcHandled: Counter<'grpc_service' | 'grpc_method' | 'grpc_code'>;
  readonly rpcSeconds: Histogram<'grpc_service' | 'grpc_method' | 'grpc_code'>;
  /** 1 while the last database probe succeeded; what health reports as SERVING. */
  readonly databaseUp: Gauge;
  /** 1 while the server cannot write for want of space (common/storage.ts). */
  readonly storageFull: Gauge;
  readonly storageWriteFailures: Counter;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.rpcStarted = new Counter({
      name: 'grpc_server_started_total',
      help: 'RPCs started on the server.',
      labelNames: ['grpc_service', 'grpc_method'],
      registers,
    });
    this.rpcHandled = new Counter({
      name: 'grpc_server_handled_total',
      help: 'RPCs completed on the server, by status code.',
      labelNames: ['grpc_service', 'grpc_method', 'grpc_code'],
      registers,
    });
    this.rpcSeconds = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Time from receiving a request to sending its answer, by status code.',
      labelNames: ['grpc_service', 'grpc_method', 'grpc_code'],
      buckets: RPC_BUCKETS,
      registers,
    });
    this.databaseUp = new Gauge({ name: 'tapcredit_database_up', help: '1 when the last database probe succeeded, else 0.', registers });
    this.storageFull = new Gauge({ name: 'tapcredit_storage_full', help: '1 while the disk or database is full and the server refuses writes (health NOT_SERVING), else 0.', registers });
    this.storageWriteFailures = new Counter({
      name: 'tapcredit_storage_write_failures_total',
      help: 'Writes (requests and write probes) the database refused for want of space.',
      registers,
    });
  }

  counter<L extends string>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /**
   * A gauge read at scrape time (e.g. an outbox depth from the database).
   * read() returns one value, or values by label set. When the read fails
   * (the database is down) the gauge reads NaN (or, with labels, has no
   * samples) rather than a stale value.
   */
  gauge<L extends string>(
    name: string,
    help: string,
    read: () => Promise<number | { labels: Record<L, string>; value: number }[]>,
    labelNames: L[] = [],
  ): Gauge<L> {
    return new Gauge<L>({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        this.reset();
        let values;
        let timer: NodeJS.Timeout | undefined;
        try {
          // A database that hangs must not hang the scrape (Prometheus gives up after 10 s).
          values = await Promise.race([
            read(),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error('timed out')), GAUGE_READ_TIMEOUT_MS);
            }),
          ]);
        } catch {
          // Unknown, not stale: NaN for a plain gauge, no samples for a labelled one.
          if (labelNames.length === 0) this.set(NaN);
          return;
        } finally {
          clearTimeout(timer);
        }
        if (typeof values === 'number') this.set(values);
        else for (const v of values) this.set(v.labels as never, v.value);
      },
    });
  }

  /** Serves GET /metrics on host:port (0 picks a free port). */
  async serve(host: string, port: number, log: Logger): Promise<MetricsServer> {
    const registry = this.registry;
    const server: Server = createServer((req, res) => {
      if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
        res.writeHead(404).end('not found; metrics are at /metrics\n');
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err) => {
          log.error({ err }, 'metrics collection failed');
          res.writeHead(500).end('metrics collection failed\n');
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const actual = (server.address() as AddressInfo).port;
    const address = `${host.includes(':') ? `[${host}]` : host}:${actual}`;
    log.info({ metrics: `http://${address}/metrics` }, 'serving metrics');
    return {
      address,
      port: actual,
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    };
  }
}

export interface MetricsServer {
  /** host:port of the HTTP listener. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Seconds since an epoch-milliseconds time stored as text (0 when there is none). */
export function ageSeconds(epochMs: string | number | null | undefined, now = Date.now()): number {
  if (epochMs === null || epochMs === undefined || epochMs === '') return 0;
  return Math.max(0, (now - Number(epochMs)) / 1000);
}
