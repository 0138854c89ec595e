// The deny-list feed on its own (no gRPC): a stream behind the in-memory
// window pages from the database and then follows from memory without a
// gap; one within the window costs no query; a stream that stops taking
// writes is left alone until it drains, and dropped when it stalls.
import { expect } from 'chai';
import { openDatabase, type Db } from '../../common/db.js';
import { WatchDenyListResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { DenyListFeed, type WatchStream } from '../../issuer/deny-list-feed.js';
import { addReason } from '../../issuer/deny-list.js';
import { MIGRATIONS_TABLE, migrations } from '../../issuer/migrations.js';
import { sleep, waitFor } from '../helpers/assert.js';
import { silentLog } from '../terminal/fixtures.js';

/** A stream that records what it is sent; `open` false makes it refuse writes until drained. */
interface FakeStream {
  open: boolean;
  ended: '' | 'end' | 'drop' | 'fail';
  drain: (() => void) | undefined;
  messages: WatchDenyListResponse[];
  versions(): number[];
  stream: WatchStream;
}

function fakeStream(terminalId = 'T1'): FakeStream {
  const messages: WatchDenyListResponse[] = [];
  const s: FakeStream = {
    open: true,
    ended: '',
    drain: undefined,
    messages,
    versions: () => messages.flatMap((m) => m.changes.map((c) => Number(c.version))),
    stream: {
      terminalId,
      write: (bytes: Buffer) => {
        messages.push(WatchDenyListResponse.decode(bytes));
        return s.open;
      },
      onDrain: (fn: () => void) => (s.drain = fn),
      end: () => (s.ended = 'end'),
      drop: () => (s.ended = 'drop'),
      fail: () => (s.ended = 'fail'),
    },
  };
  return s;
}

describe('issuer: deny-list feed', () => {
  let db: Db;
  let feed: DenyListFeed;
  let reads = 0;
  const list = async (n: number, from = 0) => {
    await db.transaction(async (trx) => {
      for (let i = from; i < from + n; i++) await addReason(trx, `C${i}`, 'LOST', 1);
    });
    feed.notify();
  };
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

  beforeEach(async () => {
    db = await openDatabase({ url: ':memory:', migrations, migrationsTable: MIGRATIONS_TABLE });
    db.on('query', (q: { sql: string }) => {
      if (/^select/i.test(q.sql) && q.sql.includes('deny_list_changes')) reads++;
    });
  });
  afterEach(async () => {
    await feed.close();
    await db.destroy();
  });

  it('keeps the latest changes in memory: a stream behind them pages from the database, one within them costs no query', async () => {
    await db.transaction(async (trx) => {
      for (let i = 1; i <= 30; i++) await addReason(trx, `C${i}`, 'LOST', 1);
    });
    feed = new DenyListFeed({ db, log: silentLog, window: 10, pollMs: 0 });
    await feed.start();

    reads = 0;
    const near = fakeStream();
    feed.watch(near.stream, 25n);
    await waitFor(() => near.versions().length === 5);
    expect([near.versions(), reads]).to.deep.equal([range(26, 30), 0]);

    const far = fakeStream();
    feed.watch(far.stream, 3n);
    await waitFor(() => far.versions().at(-1) === 30);
    expect(far.versions()).to.deep.equal(range(4, 30));
    expect(reads).to.be.at.least(1);

    // Both follow on: one read for the new change, whatever the streams.
    reads = 0;
    await list(3, 100);
    await waitFor(() => far.versions().at(-1) === 33 && near.versions().at(-1) === 33);
    expect(far.versions()).to.deep.equal(range(4, 33));
    expect(near.versions()).to.deep.equal(range(26, 33));
    expect(reads).to.equal(1);
  });

  it('writes nothing more to a stream that refused a write until it drains, then catches it up; drops it when it stalls', async () => {
    feed = new DenyListFeed({ db, log: silentLog, pollMs: 0, stallMs: 300, heartbeatMs: 60_000 });
    await feed.start();
    const slow = fakeStream('SLOW');
    const stuck = fakeStream('STUCK');
    feed.watch(slow.stream, 0n);
    feed.watch(stuck.stream, 0n);
    await waitFor(() => slow.messages.length === 1 && stuck.messages.length === 1);
    slow.open = false;
    stuck.open = false;
    await list(1, 1);
    await waitFor(() => slow.versions().length === 1 && stuck.versions().length === 1);
    await list(4, 2);
    await sleep(100);
    // Refused the first change: nothing written since.
    expect([slow.versions(), stuck.versions()]).to.deep.equal([[1], [1]]);
    slow.open = true;
    slow.drain!();
    await waitFor(() => slow.versions().at(-1) === 5);
    expect(slow.versions()).to.deep.equal([1, 2, 3, 4, 5]);
    await waitFor(() => stuck.ended === 'drop', 5000);
    expect([slow.ended, stuck.versions(), feed.streams]).to.deep.equal(['', [1], 1]);
  });
});
