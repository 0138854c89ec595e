// The benchmark: starts the servers as child processes, enrolls the riders,
// measures the two baselines, the terminal's decision latency, the issuer's
// TapReport ingest at three batch sizes and the end-to-end flow from ACCEPT
// to SETTLED, and returns the report (bench/report.ts writes it).
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, freemem, loadavg, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVER_HEAP_MB } from '../common/config.js';
import { TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import { startEchoServer, storageBaseline, transportBaseline, unaryEchoBaseline, type StorageResult } from './baselines.js';
import { Cluster, type HopSettings, type ProcessFigures } from './cluster.js';
import { driveCity } from './city.js';
import { drive } from './drive.js';
import { batchesOf, sendBatches, TapFactory, type IngestResult, type Sender } from './ingest.js';
import { IssuerStore } from './issuer-store.js';
import { benchDatabases } from './postgres.js';
import { Progress } from './progress.js';
import { CardPool, enrollRiders } from './riders.js';
import { round, summarize, type LatencySummary } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface BenchOptions {
  /** Seconds of the city end-to-end drive through virtual terminals (>= 60 for the sustained figure). */
  durationSeconds: number;
  cards: number;
  /** Terminal processes (real TerminalService servers) for the decision latency and the gates drive. */
  terminals: number;
  /** Concurrent readers per terminal in the gates drive. */
  readersPerTerminal: number;
  /** Taps per second of the city drive over all virtual terminals; 0: as fast as the issuer takes them. */
  rate: number;
  /** Virtual terminals of the city drive (the generator plays their forwarders). */
  virtualTerminals: number;
  /** With rate 0: most taps of the city drive accepted but not yet final; bounds the lag while finding the sustainable rate. */
  maxInFlight: number;
  /** Seconds of the gates drive: cards presented at the terminal processes (PresentCard), end to end. */
  gatesSeconds: number;
  /** Seconds of the isolated decision-latency phase, and its rate over all terminals. */
  latencySeconds: number;
  latencyRate: number;
  /** Taps sent per batch size in the ingest phase and the baselines. */
  ingestTaps: Record<number, number>;
  /** Virtual terminals sending TapReport batches at once. */
  senders: number;
  /** Gates each reporting single taps at once (batch 1 from a city's gates), and the taps they send in all. */
  gateSenders: number;
  gateTaps: number;
  tls: boolean;
  logLevel: string;
  hops: HopSettings;
  fareMinorUnits: number;
  /** Write CPU profiles of the servers here. */
  profileDir?: string;
  /** V8 old-space cap of each server in MB (--max-old-space-size), as npm start runs them; 0: Node's default. */
  heapMb: number;
  /** A PostgreSQL server (postgres://...): the issuer and the authorizer get fresh databases on it for the run; SQLite files when unset. */
  postgres?: string;
  /** Keep the data directory (SQLite files, logs) afterwards. */
  keep: boolean;
  quiet: boolean;
  quick: boolean;
}

export const BATCH_SIZES = [1, 100, 1000] as const;

export const DEFAULT_OPTIONS: BenchOptions = {
  durationSeconds: 60,
  cards: 5000,
  terminals: 4,
  readersPerTerminal: 8,
  rate: 0,
  virtualTerminals: 8,
  maxInFlight: 3000,
  gatesSeconds: 20,
  latencySeconds: 10,
  latencyRate: 200,
  ingestTaps: { 1: 2000, 100: 20_000, 1000: 50_000 },
  senders: 4,
  gateSenders: 64,
  gateTaps: 6400,
  tls: true,
  logLevel: 'info',
  hops: {},
  fareMinorUnits: 200,
  heapMb: SERVER_HEAP_MB,
  keep: false,
  quiet: false,
  quick: false,
};

/** A few seconds end to end: proves the harness works, measures nothing worth quoting. */
export const QUICK_OPTIONS: Partial<BenchOptions> = {
  durationSeconds: 3,
  cards: 40,
  terminals: 2,
  readersPerTerminal: 2,
  virtualTerminals: 2,
  maxInFlight: 1000,
  gatesSeconds: 2,
  latencySeconds: 1,
  latencyRate: 50,
  ingestTaps: { 1: 40, 100: 400, 1000: 2000 },
  senders: 2,
  gateSenders: 4,
  gateTaps: 40,
  quick: true,
};

export interface Machine {
  nproc: number;
  cpuModel: string;
  memoryMb: number;
  freeMemoryMb: number;
  /** 1, 5 and 15 minute load averages at the start and at the end of the run. */
  loadAverageStart: number[];
  loadAverageEnd: number[];
  node: string;
  platform: string;
}

export interface TapReportFigure {
  batchSize: number;
  /** Virtual terminals sending at once, one call at a time each. */
  senders: number;
  tapsPerSecond: number;
  callLatency: LatencySummary;
  notStored: Record<string, number>;
  /** The same batches through the echo server, and the same rows into bare SQLite. */
  transportTapsPerSecond: number;
  storageRowsPerSecond: number;
  ratioToTransport: number;
  ratioToStorage: number;
}

export interface EndToEnd {
  /** Where taps were accepted: "virtual terminals" (the generator plays the gates' forwarders) or "terminal processes" (PresentCard). */
  source: 'virtual terminals' | 'terminal processes';
  durationSeconds: number;
  /** Virtual terminals, or terminal processes. */
  terminals: number;
  /** Concurrent readers per terminal process (gates drive only). */
  readersPerTerminal?: number;
  /** Taps per second asked; 0: as fast as they are taken. */
  rate: number;
  /** City drive with rate 0: most taps accepted but not yet final. */
  maxInFlight?: number;
  accepted: number;
  acceptedPerSecond: number;
  /** Gates drive only: cards presented, declines and failed calls by reason, and PresentCard latency under this load. */
  presented?: number;
  declined?: Record<string, number>;
  errors?: Record<string, number>;
  presentCardLatency?: LatencySummary;
  /** Taps accepted in the drive that reached SETTLED, and those that did not within the drain timeout. */
  settled: number;
  unsettled: number;
  /** Accepted taps settled per second, from the drive's start to the last one settled. */
  settledPerSecond: number;
  /** Taps settled during the drive window itself, per second. */
  settledPerSecondInWindow: number;
  /** Seconds from the end of the drive until the last accepted tap was settled. */
  drainSeconds: number;
  lag: LatencySummary;
  /** Per second of the drive: taps accepted, taps (of the drive) settled. */
  timeline: { accepted: number[]; settled: number[] };
  /** CPU seconds each process used from the drive's start to the end of the drain, and the share of the machine. */
  cpu: Record<string, { seconds: number; systemSeconds: number; shareOfMachine: number }>;
  ratioToTransport: number;
  ratioToStorage: number;
}

export interface BenchReport {
  version: 1;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  options: Omit<BenchOptions, 'quiet' | 'keep' | 'profileDir' | 'postgres'>;
  /** Where the issuer and the authorizer kept their data. */
  store: 'sqlite' | 'postgresql';
  machine: Machine;
  transport: 'mtls' | 'plaintext';
  durability: Record<string, string>;
  setup: { riders: number; seconds: number };
  presentCard: {
    /** Each terminal with one reader (a gate presents one card at a time), paced. */
    isolated: LatencySummary & { rate: number; terminals: number };
    /** Under the end-to-end load. */
    underLoad: LatencySummary;
    /** Floor: the echo server's unary latency plus one durable single-row commit. */
    floor: { transportP50Ms: number; transportP99Ms: number; commitP50Ms: number; commitP99Ms: number };
    ratioP99ToFloor: number;
  };
  tapReport: TapReportFigure[];
  /** The city drive: virtual terminals -> issuer -> authorizer -> SETTLED (the sustained figure). */
  endToEnd: EndToEnd;
  /** The gates drive: cards presented at terminal processes on the same machine -> SETTLED. */
  gates: EndToEnd;
  baselines: {
    transport: IngestResult[];
    storage: StorageResult[];
    unaryTransport: { inFlight: number; callsPerSecond: number; latency: LatencySummary };
  };
  servers: Record<string, { peakRssMb: number }>;
  targets: { name: string; target: string; measured: string; met: boolean }[];
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function machine(): Machine {
  const load = loadavg().map((x) => round(x, 2));
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryMb: Math.round(totalmem() / 2 ** 20),
    freeMemoryMb: Math.round(freemem() / 2 ** 20),
    loadAverageStart: load,
    loadAverageEnd: load,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
}

/** Taps of these terminals in a final state at the issuer (SETTLED, REJECTED, DECLINED, CAPPED). */
async function finalCount(store: IssuerStore, terminalIds: string[]): Promise<number> {
  const counts = await store.stateCounts(terminalIds);
  return (counts.SETTLED ?? 0) + (counts.REJECTED ?? 0) + (counts.DECLINED ?? 0) + (counts.CAPPED ?? 0);
}

/** Waits until the issuer holds `expected` final taps of these terminals (or the timeout passes); resolves how many it holds. */
async function waitSettled(store: IssuerStore, terminalIds: string[], expected: number, timeoutMs: number, progress: Progress, label: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    const final = await finalCount(store, terminalIds);
    progress.update(label, expected === 0 ? 1 : final / expected, `${fmt(final)} / ${fmt(expected)} final (settled, or declined)`);
    if (final >= expected || Date.now() - started > timeoutMs) {
      progress.done();
      return final;
    }
    await sleep(250);
  }
}

export async function runBench(partial: Partial<BenchOptions> = {}): Promise<BenchReport> {
  const opts: BenchOptions = { ...DEFAULT_OPTIONS, ...(partial.quick ? QUICK_OPTIONS : {}), ...partial };
  const progress = new Progress(process.stderr, opts.quiet);
  const startedAt = new Date();
  const host = machine();
  const dir = mkdtempSync(join(tmpdir(), 'tapcredit-bench-'));
  // The ingest's senders are the first virtual terminals of the city drive.
  const virtualTerminals = Array.from({ length: Math.max(opts.senders, opts.virtualTerminals) }, (_, i) => `BENCH${i + 1}`);
  // The gates of the batch-1 ingest from many terminals; their own ids, so the city drive's cards and shares stay as they were.
  const gateTerminals = Array.from({ length: opts.gateSenders }, (_, i) => `GATE${i + 1}`);
  progress.log(
    `tapcredit bench: ${opts.terminals} terminals x ${opts.readersPerTerminal} readers, ${opts.cards} cards, ${opts.durationSeconds} s, ` +
      `${opts.tls ? 'mTLS' : 'plaintext'}, data in ${dir}; ${host.nproc} cores, load ${host.loadAverageStart.join(' ')}`,
  );
  const pg = opts.postgres ? await benchDatabases(opts.postgres) : undefined;
  if (pg) progress.log(`issuer and authorizer on PostgreSQL: ${pg.urls.issuer.replace(/\/\/[^@/]*@/, '//')}, ${pg.urls.authorizer.replace(/\/\/[^@/]*@/, '//')}`);
  const cluster = await Cluster.start({
    dir,
    databaseUrls: pg?.urls,
    terminals: opts.terminals,
    virtualTerminals: [...virtualTerminals, ...gateTerminals],
    tls: opts.tls,
    logLevel: opts.logLevel,
    profileDir: opts.profileDir,
    heapMb: opts.heapMb || undefined,
    hops: opts.hops,
    fareMinorUnits: opts.fareMinorUnits,
  });
  const store = IssuerStore.open(pg?.urls.issuer ?? join(dir, 'issuer.sqlite'));
  const phone = { role: 'phone' as const, name: 'phone-app' };
  const terminalClients = cluster.terminals.map((t) => new TerminalServiceClient(t.address, cluster.credentials(phone, 'terminal')));
  const peak: Record<string, ProcessFigures> = {};
  const notePeaks = () => {
    for (const [name, f] of Object.entries(cluster.figures())) if (f) peak[name] = f;
  };
  try {
    // --- setup: accounts and enrolled cards ---
    const t0 = Date.now();
    // Enough money for every tap of the run, so no debit is declined.
    const riders = await enrollRiders(cluster, {
      riders: opts.cards,
      topUp: () => 100_000_000n,
      onProgress: (done) => progress.update('enroll', done / opts.cards, `${fmt(done)} / ${fmt(opts.cards)} cards`),
    });
    progress.done();
    const setup = { riders: riders.length, seconds: round((Date.now() - t0) / 1000, 1) };
    const pool = new CardPool(riders);
    const factory = new TapFactory(riders, virtualTerminals, opts.fareMinorUnits);
    const senderOf = (terminalId: string): Sender => ({ terminalId, credentials: cluster.credentials({ role: 'terminal', name: terminalId }, 'issuer') });
    const cityTerminals = virtualTerminals.map(senderOf);
    // The ingest cases: each batch size from a few forwarders, then single taps from many gates at once.
    const gateFactory = new TapFactory(riders, gateTerminals, opts.fareMinorUnits);
    const ingestCases = [
      ...BATCH_SIZES.map((batchSize) => ({ batchSize, senders: cityTerminals.slice(0, opts.senders), factory, taps: opts.ingestTaps[batchSize] })),
      { batchSize: 1, senders: gateTerminals.map(senderOf), factory: gateFactory, taps: opts.gateTaps },
    ];
    // Each sender sends at least one full batch.
    const tapsFor = (c: (typeof ingestCases)[number]) =>
      c.senders.map((s) => c.factory.build(s.terminalId, Math.max(c.batchSize, Math.ceil(c.taps / c.senders.length))));
    const label = (c: (typeof ingestCases)[number]) => `batch ${c.batchSize}, ${c.senders.length} senders`;

    // --- baselines (while nothing else runs) ---
    const echo = await startEchoServer(cluster);
    const transport: IngestResult[] = [];
    const storage: StorageResult[] = [];
    let unaryTransport;
    let unaryFloor;
    try {
      for (const c of ingestCases) {
        progress.update('baselines', transport.length / ingestCases.length, `transport, ${label(c)}`);
        // Taps built for the baselines only: never sent to the issuer, so their cards' counters simply skip those values.
        const taps = tapsFor(c);
        transport.push(await transportBaseline(echo, c.senders, taps, c.batchSize));
        progress.update('baselines', (transport.length - 0.5) / ingestCases.length, `storage, ${label(c)}`);
        storage.push(await storageBaseline(dir, taps.flat(), c.batchSize));
      }
      const one = factory.build(virtualTerminals[0], 1)[0];
      unaryTransport = await unaryEchoBaseline(echo, cityTerminals[0], one, opts.terminals * opts.readersPerTerminal, opts.quick ? 1000 : 5000);
      // One call at a time: the latency floor of a gate's decision.
      unaryFloor = await unaryEchoBaseline(echo, cityTerminals[0], one, 1, opts.quick ? 500 : 3000);
      progress.update('baselines', 1, 'done');
      progress.done();
    } finally {
      await echo.stop();
    }

    // --- PresentCard latency, each terminal one card at a time, paced ---
    const isolated = await drive({
      pool,
      terminals: terminalClients,
      readersPerTerminal: 1,
      durationMs: opts.latencySeconds * 1000,
      rate: opts.latencyRate,
      onTick: (d, ms) => progress.update('latency', ms / (opts.latencySeconds * 1000), `${fmt(d.presented)} cards presented`),
    });
    progress.done();
    await waitSettled(store, cluster.terminalIds, isolated.accepted, 120_000, progress, 'settle');

    // --- TapReport ingest ---
    const tapReport: TapReportFigure[] = [];
    for (const [i, c] of ingestCases.entries()) {
      const b = c.batchSize;
      progress.update('tapreport', i / ingestCases.length, label(c));
      const taps = tapsFor(c);
      const result = await sendBatches(cluster.issuer.address, c.senders, taps.map((t) => batchesOf(t, b)), b);
      const total = taps.reduce((n, t) => n + t.length, 0);
      // Let the pipeline digest the batch before the next measurement.
      const before = Date.now();
      while ((await store.inFlight()) > 0 && Date.now() - before < 300_000) await sleep(250);
      const tr = transport[i];
      const st = storage[i];
      tapReport.push({
        batchSize: b,
        senders: c.senders.length,
        tapsPerSecond: round(result.tapsPerSecond, 1),
        callLatency: result.callLatency,
        notStored: result.notStored,
        transportTapsPerSecond: round(tr.tapsPerSecond, 1),
        storageRowsPerSecond: round(st.rowsPerSecond, 1),
        ratioToTransport: round(result.tapsPerSecond / tr.tapsPerSecond),
        ratioToStorage: round(result.tapsPerSecond / st.rowsPerSecond),
      });
      if (total !== result.taps) throw new Error(`sent ${result.taps} of ${total} taps`);
    }
    progress.update('tapreport', 1, 'done');
    progress.done();

    // --- end to end, the city: virtual terminals -> TapReport -> Deduct -> Settle -> SETTLED ---
    const drainTimeoutMs = Math.max(120_000, opts.durationSeconds * 2000);
    const cityBase = await finalCount(store, virtualTerminals);
    let cityFinal = 0;
    const poller = setInterval(() => {
      finalCount(store, virtualTerminals).then((n) => (cityFinal = n - cityBase), () => {});
    }, 200);
    cluster.toggleProfiles();
    let cpuBefore = cpuSnapshot(cluster);
    const city = await driveCity({
      address: cluster.issuer.address,
      terminals: cityTerminals.slice(0, opts.virtualTerminals),
      factory,
      durationMs: opts.durationSeconds * 1000,
      rate: opts.rate,
      batchSize: opts.hops.forwardBatchSize ?? 500,
      maxInFlight: opts.maxInFlight,
      finalSoFar: () => cityFinal,
      onTick: (c, ms) => {
        notePeaks();
        progress.update('e2e city', ms / (opts.durationSeconds * 1000), `${fmt(c.accepted)} accepted (${fmt(c.accepted / (ms / 1000))}/s), ${fmt(c.reported)} reported`);
      },
    });
    clearInterval(poller);
    progress.done();
    notePeaks();
    let final = await waitSettled(store, virtualTerminals, cityBase + city.accepted, drainTimeoutMs, progress, 'drain');
    let cpuAfter = cpuSnapshot(cluster);
    cluster.toggleProfiles();
    notePeaks();
    const endToEnd = await endToEndFigures(store, virtualTerminals, city, final - cityBase, cpuBefore, cpuAfter, {
      source: 'virtual terminals',
      terminals: opts.virtualTerminals,
      rate: opts.rate,
      maxInFlight: opts.rate === 0 ? opts.maxInFlight : undefined,
    });
    if (city.failedCalls > 0 || city.notStored > 0) progress.log(`city drive: ${city.failedCalls} failed TapReport calls, ${city.notStored} taps not stored`);

    // --- end to end through the terminal processes: PresentCard -> forwarder -> ... -> SETTLED ---
    const gatesBase = await finalCount(store, cluster.terminalIds);
    cpuBefore = cpuSnapshot(cluster);
    const window = await drive({
      pool,
      terminals: terminalClients,
      readersPerTerminal: opts.readersPerTerminal,
      durationMs: opts.gatesSeconds * 1000,
      rate: 0,
      onTick: (d, ms) => {
        notePeaks();
        progress.update('e2e gates', ms / (opts.gatesSeconds * 1000), `${fmt(d.accepted)} accepted (${fmt(d.accepted / (ms / 1000))}/s)`);
      },
    });
    progress.done();
    notePeaks();
    final = await waitSettled(store, cluster.terminalIds, gatesBase + window.accepted, drainTimeoutMs, progress, 'drain');
    cpuAfter = cpuSnapshot(cluster);
    notePeaks();
    const gates = await endToEndFigures(store, cluster.terminalIds, window, final - gatesBase, cpuBefore, cpuAfter, {
      source: 'terminal processes',
      terminals: opts.terminals,
      readersPerTerminal: opts.readersPerTerminal,
      rate: 0,
      presented: window.presented,
      declined: window.declined,
      errors: window.errors,
      presentCardLatency: window.latency.summary(),
    });
    const crashed = cluster.crashed();
    if (crashed) throw new Error(crashed);

    const unaryLimit = unaryTransport!;
    const commit1 = storage.find((s) => s.batchSize === 1)!.commitLatency;
    const floor = {
      transportP50Ms: unaryFloor!.latency.p50Ms,
      transportP99Ms: unaryFloor!.latency.p99Ms,
      commitP50Ms: commit1.p50Ms,
      commitP99Ms: commit1.p99Ms,
    };
    const isolatedLatency = isolated.latency.summary();
    // The city's taps arrive in batches: its limits are the batch-1000 baselines. The gates' taps arrive one per call first.
    const transport1000 = transport.find((t) => t.batchSize === 1000)!.tapsPerSecond;
    const storage1000 = storage.find((s) => s.batchSize === 1000)!.rowsPerSecond;
    endToEnd.ratioToTransport = round(endToEnd.settledPerSecond / transport1000);
    endToEnd.ratioToStorage = round(endToEnd.settledPerSecond / storage1000);
    gates.ratioToTransport = round(gates.settledPerSecond / unaryLimit.callsPerSecond);
    gates.ratioToStorage = round(gates.settledPerSecond / storage1000);
    const servers = Object.fromEntries(Object.entries(peak).map(([name, f]) => [name, { peakRssMb: round(f.peakRssMb, 1) }]));

    const report: BenchReport = {
      version: 1,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      quick: opts.quick,
      options: {
        durationSeconds: opts.durationSeconds,
        cards: opts.cards,
        terminals: opts.terminals,
        readersPerTerminal: opts.readersPerTerminal,
        rate: opts.rate,
        virtualTerminals: opts.virtualTerminals,
        maxInFlight: opts.maxInFlight,
        gatesSeconds: opts.gatesSeconds,
        latencySeconds: opts.latencySeconds,
        latencyRate: opts.latencyRate,
        ingestTaps: opts.ingestTaps,
        senders: opts.senders,
        gateSenders: opts.gateSenders,
        gateTaps: opts.gateTaps,
        tls: opts.tls,
        logLevel: opts.logLevel,
        hops: opts.hops,
        fareMinorUnits: opts.fareMinorUnits,
        heapMb: opts.heapMb,
        quick: opts.quick,
      },
      machine: { ...host, loadAverageEnd: loadavg().map((x) => round(x, 2)) },
      transport: opts.tls ? 'mtls' : 'plaintext',
      store: pg ? 'postgresql' : 'sqlite',
      durability: pg ? { ...DURABILITY, ...(await pg.durability()) } : DURABILITY,
      setup,
      presentCard: {
        isolated: { ...isolatedLatency, rate: opts.latencyRate, terminals: opts.terminals },
        underLoad: gates.presentCardLatency!,
        floor,
        ratioP99ToFloor: round(isolatedLatency.p99Ms / (floor.transportP99Ms + floor.commitP99Ms)),
      },
      tapReport,
      endToEnd,
      gates,
      baselines: {
        transport: transport.map((t) => ({ ...t, tapsPerSecond: round(t.tapsPerSecond, 1), seconds: round(t.seconds) })),
        storage: storage.map((s) => ({ ...s, rowsPerSecond: round(s.rowsPerSecond, 1), seconds: round(s.seconds) })),
        unaryTransport: { inFlight: unaryLimit.inFlight, callsPerSecond: round(unaryLimit.callsPerSecond, 1), latency: unaryLimit.latency },
      },
      servers,
      targets: [],
    };
    report.targets = targets(report);
    return report;
  } finally {
    for (const c of terminalClients) c.close();
    await store.close();
    await cluster.stop();
    if (pg && !opts.keep) await pg.drop();
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
    else progress.log(`data directory (SQLite files, logs) kept in ${dir}`);
  }
}

/** What each database promises once a write is acknowledged (common/db.ts sets the pragmas). */
export const DURABILITY: Record<string, string> = {
  terminal:
    'SQLite WAL, synchronous=FULL: the WAL is fsynced at every commit, so an accepted tap survives a power loss before the gate opens (the terminal may be the only copy until the issuer acknowledges it).',
  issuer:
    'SQLite WAL, synchronous=FULL: a tap is acknowledged to the terminal only once committed and fsynced, because the terminal then stops resending it; debit outcomes and settlements are money.',
  authorizer: 'SQLite WAL, synchronous=FULL: every debit, ledger entry and settlement is fsynced before it is answered (money).',
};

type CpuSnapshot = { at: number; figures: Record<string, ProcessFigures | undefined>; self: NodeJS.CpuUsage };

function cpuSnapshot(cluster: Cluster): CpuSnapshot {
  return { at: Date.now(), figures: cluster.figures(), self: process.cpuUsage() };
}

/** The figures of a drive from its accepted taps' stored history; `final` is how many reached a final state. */
async function endToEndFigures(
  store: IssuerStore,
  terminalIds: string[],
  window: { startedAt: number; endedAt: number; accepted: number; acceptedPerSecond: number[] },
  final: number,
  before: CpuSnapshot,
  after: CpuSnapshot,
  about: Pick<EndToEnd, 'source' | 'terminals' | 'readersPerTerminal' | 'rate' | 'maxInFlight' | 'presented' | 'declined' | 'errors' | 'presentCardLatency'>,
): Promise<EndToEnd> {
  const times = await store.settledTimes(terminalIds, window.startedAt, window.endedAt + 1);
  const lags = times.map((t) => t.settledAt - t.tappedAt);
  const lastSettled = times.reduce((m, t) => Math.max(m, t.settledAt), window.endedAt);
  const seconds = Math.ceil((window.endedAt - window.startedAt) / 1000);
  const settledTimeline = new Array(seconds).fill(0);
  let inWindow = 0;
  for (const t of times) {
    const s = Math.floor((t.settledAt - window.startedAt) / 1000);
    if (s < seconds) settledTimeline[s]++;
    if (t.settledAt <= window.endedAt) inWindow++;
  }
  const elapsed = (after.at - before.at) / 1000;
  const cpu: EndToEnd['cpu'] = {};
  const cores = cpus().length;
  for (const [name, f] of Object.entries(after.figures)) {
    const b = before.figures[name];
    if (!f || !b) continue;
    const used = f.cpuSeconds - b.cpuSeconds;
    cpu[name] = { seconds: round(used, 1), systemSeconds: round(f.systemSeconds - b.systemSeconds, 1), shareOfMachine: round(used / elapsed / cores, 3) };
  }
  const selfUsed = (after.self.user + after.self.system - before.self.user - before.self.system) / 1e6;
  const selfSystem = (after.self.system - before.self.system) / 1e6;
  cpu['bench (load generator)'] = { seconds: round(selfUsed, 1), systemSeconds: round(selfSystem, 1), shareOfMachine: round(selfUsed / elapsed / cores, 3) };
  const driveSeconds = (window.endedAt - window.startedAt) / 1000;
  return {
    ...about,
    durationSeconds: round(driveSeconds, 1),
    accepted: window.accepted,
    acceptedPerSecond: round(window.accepted / driveSeconds, 1),
    settled: times.length,
    unsettled: Math.max(0, window.accepted - final),
    settledPerSecond: round(times.length / ((lastSettled - window.startedAt) / 1000), 1),
    settledPerSecondInWindow: round(inWindow / driveSeconds, 1),
    drainSeconds: round((lastSettled - window.endedAt) / 1000, 2),
    lag: summarize(lags),
    timeline: { accepted: window.acceptedPerSecond, settled: settledTimeline },
    cpu,
    ratioToTransport: 0,
    ratioToStorage: 0,
  };
}

function targets(r: BenchReport): BenchReport['targets'] {
  const e = r.endToEnd;
  const out: BenchReport['targets'] = [
    {
      name: 'PresentCard p99 (isolated gate)',
      target: '<= 2 ms',
      measured: `${r.presentCard.isolated.p99Ms} ms`,
      met: r.presentCard.isolated.p99Ms <= 2,
    },
    {
      name: 'TapReport ingest at batch 1000',
      target: '>= 50,000 taps/s',
      measured: `${fmt(r.tapReport.find((t) => t.batchSize === 1000)?.tapsPerSecond ?? 0)} taps/s`,
      met: (r.tapReport.find((t) => t.batchSize === 1000)?.tapsPerSecond ?? 0) >= 50_000,
    },
    {
      name: 'End to end, sustained',
      target: `>= 10,000 taps/s for >= 60 s`,
      measured: `${fmt(e.settledPerSecond)} taps/s for ${e.durationSeconds} s`,
      met: e.settledPerSecond >= 10_000 && e.durationSeconds >= 60 && e.unsettled === 0,
    },
    { name: 'accept -> settled p99', target: '<= 2 s', measured: `${round(e.lag.p99Ms / 1000, 2)} s`, met: e.lag.p99Ms <= 2000 },
  ];
  for (const [name, s] of Object.entries(r.servers)) {
    out.push({ name: `peak RSS ${name}`, target: '<= 200 MB', measured: `${s.peakRssMb} MB`, met: s.peakRssMb <= 200 });
  }
  return out;
}

