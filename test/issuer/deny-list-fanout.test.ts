// The deny-list feed at fan-out: hundreds of WatchDenyList streams on one
// real issuer see every change in order with no gap while the issuer reads
// the log once per change whatever the number of streams, heartbeats cost
// no query, a stream whose client stops reading is dropped (and a terminal
// so dropped catches up from the version it holds), and on PostgreSQL a
// change made on one replica reaches the streams of another through
// LISTEN/NOTIFY with polling turned off.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { pino } from 'pino';
import { openDatabase } from '../../common/db.js';
import { callUnary } from '../../common/rpc.js';
import { DenyListReason, IssuerServiceClient, type DenyListChange, type WatchDenyListResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { addReason, changesAfter } from '../../issuer/deny-list.js';
import { startIssuer, type IssuerConfig, type IssuerHandle } from '../../issuer/service.js';
import { DenyListSyncer } from '../../terminal/deny-list-sync.js';
import { terminalMigrations } from '../../terminal/migrations.js';
import { TerminalStore } from '../../terminal/store.js';
import { waitFor } from '../helpers/assert.js';
import { captureLogs } from '../helpers/logs.js';
import { POSTGRES_URL, testDatabases, type TestDatabases } from '../helpers/databases.js';

const { DENY_LIST_REASON_LOST: LOST, DENY_LIST_REASON_DEBT: DEBT } = DenyListReason;
const silent = pino({ level: 'silent' });

function issuerConfig(databaseUrl: string, over: Partial<IssuerConfig> = {}): IssuerConfig {
  return {
    issuerId: 'issuer-1',
    issuerCode: 'CITY1',
    currencyCode: 'CNY',
    databaseUrl,
    host: '127.0.0.1',
    port: 0,
    authorizerAddress: '127.0.0.1:9', // not called by these tests
    masterKey: randomBytes(32),
    signingKey: generateKeyPairSync('ed25519').privateKey,
    log: silent,
    ...over,
  };
}

/** One watch stream and what it received. */
interface Watch {
  from: bigint;
  call: ClientReadableStream<WatchDenyListResponse>;
  messages: WatchDenyListResponse[];
  changes: DenyListChange[];
  ended: Promise<ServiceError | undefined>;
  /** The version it holds: its from_version, then its last change. */
  version(): bigint;
}

/**
 * Clients of an issuer, `perChannel` streams on each channel: a channel of
 * its own (local subchannel pool) is its own HTTP/2 connection.
 */
class Watchers {
  private readonly clients: IssuerServiceClient[] = [];
  readonly all: Watch[] = [];

  constructor(
    private readonly address: string,
    private readonly perChannel = 100,
  ) {}

  private client(): IssuerServiceClient {
    if (this.all.length % this.perChannel === 0 || this.clients.length === 0) {
      this.clients.push(new IssuerServiceClient(this.address, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    }
    return this.clients[this.clients.length - 1];
  }

  open(from: bigint, terminalId = `T${this.all.length}`): Watch {
    const call = this.client().watchDenyList({ fromVersion: from.toString(), terminalId }, new Metadata());
    const w: Watch = {
      from,
      call,
      messages: [],
      changes: [],
      ended: new Promise((resolve) => {
        call.on('error', (err: ServiceError) => resolve(err));
        call.on('end', () => resolve(undefined));
      }),
      version: () => (w.changes.length > 0 ? BigInt(w.changes[w.changes.length - 1].version) : from),
    };
    call.on('data', (m: WatchDenyListResponse) => {
      w.messages.push(m);
      w.changes.push(...m.changes);
    });
    this.all.push(w);
    return w;
  }

  close(): void {
    for (const w of this.all) w.call.cancel();
    for (const c of this.clients) c.close();
  }
}

/** Every change after the stream's from_version, each once, in order, as the log holds it. */
function expectNoGap(w: Watch, log: DenyListChange[]): void {
  const expected = log.filter((c) => BigInt(c.version) > w.from);
  expect(w.changes.map((c) => [c.version, c.cardId, c.action, c.reasons])).to.deep.equal(expected.map((c) => [c.version, c.cardId, c.action, c.reasons]));
}

/** Reads of the deny-list log by the issuer process (the writers only insert into it). */
function countLogReads(issuer: IssuerHandle): { readonly n: number; reset(): void } {
  let n = 0;
  issuer.db.on('query', (q: { sql: string }) => {
    if (/^select/i.test(q.sql) && q.sql.includes('deny_list_changes')) n++;
  });
  return {
    get n() {
      return n;
    },
    reset: () => (n = 0),
  };
}

/**
 * Lists `batches` x `perBatch` cards with long ids (~100 bytes a change),
 * each batch in its own transaction and without telling the feed, as another
 * process would: the feed's poll finds each batch and sends it as one
 * message. Enough messages to fill what a client that stops reading
 * buffers (16 messages and its HTTP/2 window) and the issuer's bound.
 */
async function burst(issuer: IssuerHandle, prefix: string, batches = 60, perBatch = 100): Promise<void> {
  for (let b = 0; b < batches; b++) {
    await issuer.db.transaction(async (trx) => {
      for (let i = 0; i < perBatch; i++) await addReason(trx, `${prefix}-${String(b * perBatch + i).padStart(6, '0')}-${'x'.repeat(48)}`, 'LOST', Date.now());
    });
    await new Promise((r) => setTimeout(r, 60));
  }
}

describe('issuer: deny-list fan-out', function () {
  this.timeout(120_000);
  let dir: string;
  let issuer: IssuerHandle;
  let watchers: Watchers;
  let client: IssuerServiceClient;

  const start = async (over: Partial<IssuerConfig> = {}) => {
    issuer = await startIssuer(issuerConfig(join(dir, 'issuer.sqlite'), over));
    watchers = new Watchers(issuer.address);
    client = new IssuerServiceClient(issuer.address, credentials.createInsecure());
  };
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tapcredit-fanout-'))));
  afterEach(async () => {
    watchers?.close();
    client?.close();
    await issuer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('brings 300 streams every listing and unlisting in order with no gap, reading the log about once per change, and heartbeats with no query', async () => {
    const STREAMS = 300;
    const CHANGES = 24;
    // No polling: this process tells its feed of its own changes, so every read counted is one a change caused.
    await start({ denyListHeartbeatMs: 200, denyListPollMs: 0 });
    const reads = countLogReads(issuer);
    for (let i = 0; i < 6; i++) await callUnary(client, client.addToDenyList, { cardId: `PRE${i}`, reason: LOST });
    // Streams from several versions: the start of the log, the middle, the head.
    for (let i = 0; i < STREAMS; i++) watchers.open(BigInt([0, 3, 6][i % 3]));
    await waitFor(() => watchers.all.every((w) => w.messages.length > 0 && w.version() === 6n), 30_000);

    reads.reset();
    for (let i = 0; i < CHANGES / 2; i++) {
      const cardId = `C${i}`;
      await callUnary(client, client.addToDenyList, { cardId, reason: i % 2 ? DEBT : LOST });
      await callUnary(client, client.removeFromDenyList, { cardId, reason: i % 2 ? DEBT : LOST });
    }
    const last = 6n + BigInt(CHANGES);
    await waitFor(() => watchers.all.every((w) => w.version() === last), 30_000);
    const readsPerChange = reads.n / CHANGES;

    const log = await changesAfter(issuer.db, 0n, 1000);
    expect(log).to.have.length(Number(last));
    for (const w of watchers.all) expectNoGap(w, log);
    // One read per change (a change and its unlisting may even share one), not one per stream.
    expect(readsPerChange, `log reads per change with ${STREAMS} streams`).to.be.at.most(1.5);

    // Quiet: every stream gets heartbeats (empty messages at the head), and the log is not read for them.
    reads.reset();
    const before = watchers.all.map((w) => w.messages.length);
    await new Promise((r) => setTimeout(r, 900));
    expect(reads.n).to.equal(0);
    watchers.all.forEach((w, i) => {
      const beats = w.messages.slice(before[i]);
      expect(beats.length, 'heartbeats of a stream').to.be.at.least(2);
      for (const b of beats) expect(b).to.deep.equal({ changes: [], headVersion: String(last), reset: false });
    });
  });

  it('drops a stream whose client stops reading, with RESOURCE_EXHAUSTED, and keeps serving the others', async () => {
    const logs = captureLogs();
    await start({ denyListStallMs: 500, denyListPollMs: 40, log: logs.log });
    const stuck = watchers.open(0n, 'STUCK');
    const fine = watchers.open(0n, 'FINE');
    await waitFor(() => stuck.messages.length > 0 && fine.messages.length > 0);
    stuck.call.pause();
    const CHANGES = 6000;
    await burst(issuer, 'CARD');
    await waitFor(() => fine.version() === BigInt(CHANGES), 30_000);
    await waitFor(() => logs.lines().some((l) => l.msg === 'deny-list watcher takes nothing; dropping it' && l.terminalId === 'STUCK'), 10_000);
    stuck.call.resume();
    const err = await stuck.ended;
    expect(err?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(stuck.version() < BigInt(CHANGES), 'the dropped stream got the whole burst').to.equal(true);
    // What the dropped stream did get is a gap-free prefix of the log: it resumes from there.
    const log = await changesAfter(issuer.db, 0n, CHANGES);
    expect(stuck.changes.map((c) => c.version)).to.deep.equal(log.slice(0, stuck.changes.length).map((c) => c.version));
    expectNoGap(fine, log);

    // The stream that kept reading was not touched; a new one from the dropped stream's version is served.
    const again = watchers.open(stuck.version(), 'STUCK');
    await waitFor(() => again.version() === BigInt(CHANGES), 30_000);
    expectNoGap(again, log);
    await callUnary(client, client.addToDenyList, { cardId: 'LAST', reason: LOST });
    await waitFor(() => fine.version() === BigInt(CHANGES + 1));
  });

  it('a terminal dropped for applying too slowly catches up from the version it holds', async () => {
    const logs = captureLogs();
    await start({ denyListStallMs: 300, denyListPollMs: 40, log: logs.log });
    const db = await openDatabase({ url: join(dir, 'terminal.sqlite'), migrations: terminalMigrations, migrationsTable: 'terminal_migrations' });
    const store = await TerminalStore.open(db);
    // The terminal stalls on its first non-empty batch (e.g. a disk that hangs), long past the issuer's patience.
    const apply = store.applyDenyListChanges.bind(store);
    let stalled = false;
    let release!: () => void;
    const hung = new Promise<void>((r) => (release = r));
    store.applyDenyListChanges = async (changes, reset) => {
      if (changes.length > 0 && !stalled) {
        stalled = true;
        await hung;
      }
      return apply(changes, reset);
    };
    const syncer = new DenyListSyncer({ store, client, terminalId: 'T1', log: silent, minBackoffMs: 50, maxBackoffMs: 200 });
    syncer.start();
    try {
      await waitFor(() => syncer.syncedAt !== undefined);
      await callUnary(client, client.addToDenyList, { cardId: 'FIRST', reason: LOST });
      // While the terminal hangs on the first change, a burst fills its stream.
      await burst(issuer, 'CARD', 40);
      await waitFor(() => logs.lines().some((l) => l.msg === 'deny-list watcher takes nothing; dropping it' && l.terminalId === 'T1'), 10_000);
      expect(stalled).to.equal(true);
      release();
      await waitFor(async () => (await store.denyListVersion()) === 4001n, 30_000);
      const log = await changesAfter(issuer.db, 0n, 5000);
      expect(log.every((c) => store.isDenyListed(c.cardId))).to.equal(true);
    } finally {
      release();
      await syncer.stop();
      await db.destroy();
    }
  });
});

if (POSTGRES_URL)
  describe('issuer: deny-list replicas on PostgreSQL (LISTEN/NOTIFY, polling off)', function () {
    this.timeout(120_000);
    let dir: string;
    let dbs: TestDatabases;
    let a: IssuerHandle;
    let b: IssuerHandle;
    let watchers: Watchers;
    let client: IssuerServiceClient;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tapcredit-fanout-pg-'));
      dbs = testDatabases('postgres', dir);
      const url = await dbs.url('issuer');
      a = await startIssuer(issuerConfig(url, { denyListPollMs: 0, replicaId: 'a' }));
      b = await startIssuer(issuerConfig(url, { denyListPollMs: 0, replicaId: 'b' }));
      watchers = new Watchers(b.address);
      client = new IssuerServiceClient(a.address, credentials.createInsecure());
    });
    after(async () => {
      watchers?.close();
      client?.close();
      await a?.close();
      await b?.close();
      await dbs?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    it("a change made on replica A reaches replica B's streams, each once and in order", async () => {
      for (let i = 0; i < 50; i++) watchers.open(0n);
      await waitFor(() => watchers.all.every((w) => w.messages.length > 0), 30_000);
      for (let i = 1; i <= 5; i++) {
        await callUnary(client, client.addToDenyList, { cardId: `C${i}`, reason: LOST });
        // Polling is off, so only NOTIFY can bring it; the bound is generous for a shared machine (the bench measures the time).
        await waitFor(() => watchers.all.every((w) => w.version() === BigInt(i)), 5_000);
      }
      const log = await changesAfter(a.db, 0n, 100);
      for (const w of watchers.all) expectNoGap(w, log);
    });
  });
