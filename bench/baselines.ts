// The two limits each figure is compared with, measured in the same run on
// the same machine:
// - transport: a bare grpc-js echo server (bench/echo-server.ts, its own
//   process) carrying the same TapReport batches over the same transport;
// - storage: a bare knex/SQLite insert of the same rows into the issuer's own
//   taps table (its migrations, so the same indexes), with the same pragmas
//   (WAL, synchronous=FULL), one transaction per batch.
import { join } from 'node:path';
import { openDatabase } from '../common/db.js';
import { fingerprint } from '../common/ids.js';
import { callUnary } from '../common/rpc.js';
import { IssuerServiceClient } from '../gen/tapcredit/issuer/v1/issuer.js';
import { Tap } from '../gen/tapcredit/type/v1/tap.js';
import { migrations as issuerMigrations, MIGRATIONS_TABLE } from '../issuer/migrations.js';
import { tapRow } from '../issuer/taps.js';
import { freePort, ServerProcess, type Cluster } from './cluster.js';
import { batchesOf, sendBatches, type IngestResult, type Sender } from './ingest.js';
import { Latencies, nowMs, type LatencySummary } from './stats.js';

export interface StorageResult {
  batchSize: number;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  /** Latency of one commit (a whole batch). */
  commitLatency: LatencySummary;
}

/** The row the issuer stores for a RECEIVED tap, through the issuer's own tapRow. */
const receivedRow = (tap: Tap, now: number) =>
  tapRow({ tap, print: fingerprint(Tap.encode(tap).finish()), state: 'RECEIVED', risk: { serviceDay: new Date(now).toISOString().slice(0, 10), due: BigInt(tap.fare!.minorUnits) } }, now);

/** Inserts the taps' rows into a fresh issuer schema, batchSize rows per transaction (chunks of 400 rows per INSERT, as the issuer). */
export async function storageBaseline(dir: string, taps: Tap[], batchSize: number): Promise<StorageResult> {
  const db = await openDatabase({ url: join(dir, `storage-baseline-${batchSize}.sqlite`), migrations: issuerMigrations, migrationsTable: MIGRATIONS_TABLE });
  try {
    const latency = new Latencies();
    const t0 = nowMs();
    for (const batch of batchesOf(taps, batchSize)) {
      const c0 = nowMs();
      const now = Date.now();
      const rows = batch.map((t) => receivedRow(t, now));
      await db.transaction(async (trx) => {
        for (const part of batchesOf(rows, 400)) await trx('taps').insert(part);
      });
      latency.add(nowMs() - c0);
    }
    const seconds = (nowMs() - t0) / 1000;
    return { batchSize, rows: taps.length, seconds, rowsPerSecond: taps.length / seconds, commitLatency: latency.summary() };
  } finally {
    await db.destroy();
  }
}

/** The echo server as a child process, on the cluster's transport. */
export async function startEchoServer(cluster: Cluster): Promise<ServerProcess> {
  const port = await freePort();
  const echo = new ServerProcess({
    name: 'echo',
    entry: 'bench/echo-server',
    // Not part of the build: always from source.
    runtime: 'source',
    args: ['--port', String(port), ...(cluster.opts.tls ? [] : ['--insecure'])],
    env: { TAPCREDIT_CERTS_DIR: cluster.certsDir },
    output: { logDir: join(cluster.opts.dir, 'logs') },
  });
  await echo.start();
  return echo;
}

/** The same batches as the ingest, through the echo server. */
export async function transportBaseline(echo: ServerProcess, senders: Sender[], taps: Tap[][], batchSize: number): Promise<IngestResult> {
  return sendBatches(echo.address, senders, taps.map((t) => batchesOf(t, batchSize)), batchSize);
}

/**
 * Unary echo calls of one tap each with `inFlight` calls at once for
 * durationMs: the transport's ceiling for PresentCard-sized calls, and its
 * latency floor.
 */
export async function unaryEchoBaseline(echo: ServerProcess, sender: Sender, tap: Tap, inFlight: number, durationMs: number) {
  const client = new IssuerServiceClient(echo.address, sender.credentials);
  const latency = new Latencies();
  try {
    await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())));
    const t0 = nowMs();
    const until = t0 + durationMs;
    let calls = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (nowMs() < until) {
          const c0 = nowMs();
          await callUnary(client, client.tapReport, { terminalId: sender.terminalId, taps: [tap] });
          latency.add(nowMs() - c0);
          calls++;
        }
      }),
    );
    const seconds = (nowMs() - t0) / 1000;
    return { inFlight, calls, seconds, callsPerSecond: calls / seconds, latency: latency.summary() };
  } finally {
    client.close();
  }
}
