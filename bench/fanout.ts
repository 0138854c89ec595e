// `npm run bench:fanout -- [--streams 10000] [--changes 20] [--insecure] [--keep]`
// The deny list's fan-out: the issuer (as `npm start` runs it: its own
// process, SQLite, mTLS, a 128 MB heap cap) with N WatchDenyList streams
// open from this process, over N/100 HTTP/2 connections (grpc-js puts up to
// ~100 concurrent streams on one). Then one card is listed at a time with
// AddToDenyList, and each stream notes when it sees the change. It prints
// the time to sync every stream, the p50/p99 time from the call to a
// stream seeing the listing (over every stream and change), the time until
// the last stream saw it, the issuer's RSS before and with the streams and
// its CPU per change. Beside it, measured in the same run on the same
// machine: a bare grpc-js server (bench/fanout-baseline.ts, same transport)
// writing the same message, encoded once, to the same number of streams.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata, type ChannelCredentials, type ClientReadableStream } from '@grpc/grpc-js';
import { Command, InvalidArgumentError } from 'commander';
import { SERVER_HEAP_MB } from '../common/config.js';
import { freePort } from '../common/ports.js';
import { callUnary } from '../common/rpc.js';
import { DenyListReason, IssuerServiceClient, type WatchDenyListResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import { ServerProcess } from '../common/launcher.js';
import { Cluster, processFigures, type ProcessFigures } from './cluster.js';
import { round, summarize } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';

const STREAMS_PER_CONNECTION = 100;
const TERMINAL = 'FANOUT';

export interface FanoutFigures {
  server: string;
  streams: number;
  connections: number;
  /** From opening the first stream to every stream holding its first message. */
  syncAllMs: number;
  /** From the AddToDenyList call to a stream seeing the change, over every stream and change. */
  seenP50Ms: number;
  seenP99Ms: number;
  /** From the call until the last stream saw the change: median and worst over the changes. */
  allSeenP50Ms: number;
  allSeenMaxMs: number;
  /** Changes some stream never saw within the timeout. */
  missed: number;
  rssBeforeMb: number;
  rssWithStreamsMb: number;
  peakRssMb: number;
  cpuMsPerChange: number;
}

interface Target {
  name: string;
  address: string;
  process: ServerProcess;
  streamCredentials: ChannelCredentials;
  opsCredentials: ChannelCredentials;
}

async function measure(target: Target, streams: number, changes: number, log: (line: string) => void, profile?: () => void): Promise<FanoutFigures> {
  const figures = () => processFigures(target.process.pid!) as ProcessFigures;
  await sleep(1000);
  const before = figures();
  const connections = Math.ceil(streams / STREAMS_PER_CONNECTION);
  // A channel per connection: a local subchannel pool keeps grpc-js from sharing one connection between equal channels.
  const clients = Array.from(
    { length: connections },
    (_, i) => new IssuerServiceClient(target.address, target.streamCredentials, { 'grpc.use_local_subchannel_pool': 1, 'tapcredit.bench_channel': i }),
  );
  const ops = new IssuerServiceClient(target.address, target.opsCredentials);
  const calls: ClientReadableStream<WatchDenyListResponse>[] = [];
  let synced = 0;
  let base = -1n;
  const started: number[] = [];
  const seenBy: number[] = new Array(changes).fill(0);
  const latencies: number[] = [];
  try {
    const t0 = performance.now();
    for (let i = 0; i < streams; i++) {
      const call = clients[Math.floor(i / STREAMS_PER_CONNECTION)].watchDenyList({ fromVersion: '0', terminalId: TERMINAL }, new Metadata());
      let first = true;
      call.on('data', (m: WatchDenyListResponse) => {
        if (first) {
          first = false;
          synced++;
        }
        const now = performance.now();
        for (const c of m.changes) {
          const k = base < 0n ? -1 : Number(BigInt(c.version) - base - 1n);
          if (k >= 0 && k < changes) {
            seenBy[k]++;
            latencies.push(now - started[k]);
          }
        }
      });
      call.on('error', () => {});
      calls.push(call);
    }
    while (synced < streams) {
      if (performance.now() - t0 > 300_000) throw new Error(`${target.name}: only ${synced} of ${streams} streams synced in 300 s`);
      await sleep(10);
    }
    const syncAllMs = performance.now() - t0;
    log(`${target.name}: ${streams} streams synced in ${Math.round(syncAllMs)} ms`);
    await sleep(2000);
    const withStreams = figures();

    // The log's head before the changes: the bench's changes follow it.
    const first = await callUnary(ops, ops.addToDenyList, { cardId: 'BENCH-WARMUP', reason: DenyListReason.DENY_LIST_REASON_LOST });
    base = BigInt(first.version);
    await sleep(1000);
    profile?.();
    const cpu0 = figures().cpuSeconds;
    const allSeen: number[] = [];
    let missed = 0;
    for (let k = 0; k < changes; k++) {
      started[k] = performance.now();
      await callUnary(ops, ops.addToDenyList, { cardId: `BENCH-${k}`, reason: DenyListReason.DENY_LIST_REASON_LOST }, 60_000);
      while (seenBy[k] < streams && performance.now() - started[k] < 30_000) await sleep(2);
      if (seenBy[k] < streams) missed++;
      allSeen.push(performance.now() - started[k]);
      await sleep(200);
    }
    const cpuMsPerChange = ((figures().cpuSeconds - cpu0) * 1000) / changes;
    profile?.();
    const seen = summarize(latencies);
    const all = summarize(allSeen);
    const after = figures();
    return {
      server: target.name,
      streams,
      connections,
      syncAllMs: Math.round(syncAllMs),
      seenP50Ms: round(seen.p50Ms, 1),
      seenP99Ms: round(seen.p99Ms, 1),
      allSeenP50Ms: round(all.p50Ms, 1),
      allSeenMaxMs: round(all.maxMs, 1),
      missed,
      rssBeforeMb: Math.round(before.rssMb),
      rssWithStreamsMb: Math.round(Math.max(withStreams.rssMb, after.rssMb)),
      peakRssMb: Math.round(after.peakRssMb),
      cpuMsPerChange: round(cpuMsPerChange, 1),
    };
  } finally {
    for (const c of calls) c.cancel();
    for (const c of clients) c.close();
    ops.close();
  }
}

export async function fanoutBench(opts: {
  streams: number;
  changes: number;
  tls: boolean;
  dir?: string;
  keep?: boolean;
  /** Write the issuer's CPU profile of the changes into this directory. */
  profileDir?: string;
  /** V8 old-space cap of both servers in MB; SERVER_HEAP_MB (as npm start) when unset, 0 for Node's own. */
  heapMb?: number;
  log?: (line: string) => void;
}): Promise<FanoutFigures[]> {
  const log = opts.log ?? ((line: string) => console.error(line));
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'tapcredit-fanout-'));
  const heapMb = opts.heapMb ?? SERVER_HEAP_MB;
  const cluster = await Cluster.start({
    dir,
    terminals: 0,
    virtualTerminals: [TERMINAL],
    tls: opts.tls,
    logLevel: 'warn',
    heapMb: heapMb || undefined,
    fareMinorUnits: 200,
    profileDir: opts.profileDir,
  });
  const port = await freePort();
  const baseline = new ServerProcess({
    name: 'fanout-baseline',
    entry: 'bench/fanout-baseline',
    // Not part of the build: always from source.
    runtime: 'source',
    args: ['--port', String(port), ...(opts.tls ? [] : ['--insecure'])],
    env: { TAPCREDIT_CERTS_DIR: cluster.certsDir },
    nodeArgs: heapMb ? [`--max-old-space-size=${heapMb}`] : [],
    output: { logDir: join(dir, 'logs') },
  });
  try {
    await baseline.start();
    const streamCredentials = cluster.credentials({ role: 'terminal', name: TERMINAL }, 'issuer');
    const opsCredentials = cluster.credentials({ role: 'ops', name: 'admin' }, 'issuer');
    const results: FanoutFigures[] = [];
    for (const target of [
      { name: 'issuer', address: cluster.issuer.address, process: cluster.issuer, streamCredentials, opsCredentials },
      { name: 'bare grpc-js', address: baseline.address, process: baseline, streamCredentials, opsCredentials },
    ]) {
      const profile = opts.profileDir && target.process === cluster.issuer ? () => process.kill(cluster.issuer.pid!, 'SIGUSR2') : undefined;
      results.push(await measure(target, opts.streams, opts.changes, log, profile));
    }
    return results;
  } finally {
    await baseline.stop();
    await cluster.stop();
    if (!opts.keep && !opts.dir) rmSync(dir, { recursive: true, force: true });
  }
}

export function renderFanout(results: FanoutFigures[]): string {
  const lines = [
    '| server | streams (connections) | all synced in | a listing seen by a stream: p50 / p99 | seen by every stream: median / worst | RSS before -> with streams (peak) | CPU per change |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.server} | ${r.streams.toLocaleString('en')} (${r.connections}) | ${(r.syncAllMs / 1000).toFixed(1)} s | ${Math.round(r.seenP50Ms)} / ${Math.round(r.seenP99Ms)} ms | ${Math.round(r.allSeenP50Ms)} / ${Math.round(r.allSeenMaxMs)} ms${r.missed ? ` (${r.missed} missed)` : ''} | ${r.rssBeforeMb} -> ${r.rssWithStreamsMb} MB (${r.peakRssMb}) | ${r.cpuMsPerChange} ms |`,
    );
  }
  return lines.join('\n');
}

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

if (import.meta.url === `file://${process.argv[1]}`) {
  const o = new Command()
    .name('bench:fanout')
    .description("WatchDenyList fan-out: N streams on one issuer, one listing at a time; beside a bare grpc-js server's limit")
    .option('--streams <n>', 'WatchDenyList streams held open', int, 1000)
    .option('--changes <n>', 'cards listed one after the other', int, 20)
    .option('--insecure', 'plaintext on loopback instead of mTLS')
    .option('--keep', 'keep the data directory (logs)')
    .option('--heap-mb <n>', `V8 old-space cap of both servers in MB (default ${SERVER_HEAP_MB}, as npm start; 0: Node's own)`, (v: string) => Number(v))
    .option('--profile <dir>', "write the issuer's CPU profile of the changes into dir (bench/profile-summary.ts reads it)")
    .parse()
    .opts<{ streams: number; changes: number; insecure?: boolean; keep?: boolean; profile?: string; heapMb?: number }>();
  const results = await fanoutBench({ streams: o.streams, changes: o.changes, tls: !o.insecure, keep: o.keep, profileDir: o.profile, heapMb: o.heapMb });
  console.log(renderFanout(results));
  console.log(JSON.stringify(results));
  process.exit(0);
}
