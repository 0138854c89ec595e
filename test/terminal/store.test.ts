import { join } from 'node:path';
import { expect } from 'chai';
import { openDatabase, type Db } from '../../common/db.js';
import type { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import { terminalMigrations } from '../../terminal/migrations.js';
import { TerminalStore } from '../../terminal/store.js';
import { FARE, removeDir, tempDir } from './fixtures.js';

const tapAt = (sequence: bigint, cardId = 'C1'): Tap => ({
  tapId: `T1:${sequence}`,
  terminalId: 'T1',
  terminalSequence: sequence.toString(),
  cardId,
  agreementId: `agr_${cardId}`,
  fare: FARE,
  tappedAt: new Date(1_770_000_000_000 + Number(sequence % 1_000_000n)),
  proof: { cardId, counter: '1', terminalId: 'T1', terminalSequence: sequence.toString(), terminalRandom: Buffer.alloc(8, 1), mac: Buffer.alloc(8, 2) },
  // Optional fields decode as present-but-undefined.
  lineId: undefined,
  traceparent: undefined,
});

describe('terminal store', () => {
  let dir: string;
  let db: Db;
  const open = () => openDatabase({ url: join(dir, 'terminal.sqlite'), migrations: terminalMigrations, migrationsTable: 'terminal_migrations' });

  beforeEach(async () => {
    dir = tempDir();
    db = await open();
  });
  afterEach(async () => {
    await db.destroy();
    removeDir(dir);
  });

  it("remembers each card's last tap within the repeat window, across a restart (read back from the taps table)", async () => {
    const at = (sequence: bigint, cardId: string, tappedAt: number, repeatOfTapId?: string): Tap => ({
      ...tapAt(sequence, cardId),
      tappedAt: new Date(tappedAt),
      proof: { ...tapAt(sequence, cardId).proof!, counter: String(10n + sequence) },
      ...(repeatOfTapId ? { repeatOfTapId } : {}),
    });
    const now = 1_770_000_100_000;
    const store = await TerminalStore.open(db, { recentWindowMs: 60_000, now: () => now });
    await store.recordTap(at(1n, 'C1', now - 120_000));
    await store.recordTap(at(2n, 'C2', now - 30_000));
    await store.recordTap(at(3n, 'C2', now - 20_000, 'T1:2'));
    await store.recordTap(at(4n, 'C3', now - 10_000));
    const expected = { C2: { tapId: 'T1:3', counter: 13n, tappedAt: now - 20_000, repeatOf: 'T1:2' }, C3: { tapId: 'T1:4', counter: 14n, tappedAt: now - 10_000 } };
    for (const s of [store, await TerminalStore.open(db, { recentWindowMs: 60_000, now: () => now })]) {
      expect(s.lastTapOf('C1', now), 'outside the window').to.equal(undefined);
      expect(s.lastTapOf('C2', now)).to.deep.equal(expected.C2);
      expect(s.lastTapOf('C3', now)).to.deep.equal(expected.C3);
      expect(s.lastTapOf('C3', now + 50_001), 'the window has passed').to.equal(undefined);
    }
  });

  it('forgets a tap whose commit failed', async () => {
    const store = await TerminalStore.open(db);
    const now = Date.now();
    await store.recordTap({ ...tapAt(1n), tappedAt: new Date(now) });
    // Same sequence: the commit fails, and the card's last tap stays the stored one.
    let failed = false;
    await store.recordTap({ ...tapAt(1n), tapId: 'T1:x', tappedAt: new Date(now) }).catch(() => (failed = true));
    expect(failed).to.equal(true);
    expect(store.lastTapOf('C1', now)?.tapId).to.equal('T1:1');
  });

  it('starts a fresh terminal at sequence 1', async () => {
    const store = await TerminalStore.open(db);
    expect(store.peekSequence()).to.equal(1n);
  });

  it('hands out each sequence once, in order', async () => {
    const store = await TerminalStore.open(db);
    expect(store.reserveSequence()).to.equal(1n);
    expect(store.peekSequence()).to.equal(2n);
    expect(store.reserveSequence()).to.equal(2n);
    expect(store.peekSequence()).to.equal(3n);
  });

  it('continues after the highest stored sequence when reopened, even above 2^53', async () => {
    const big = 2n ** 60n;
    await (await TerminalStore.open(db)).recordTap(tapAt(big));
    await db.destroy();
    db = await open();
    expect((await TerminalStore.open(db)).peekSequence()).to.equal(big + 1n);
  });

  it('stores a tap byte for byte and lists unsent taps oldest first until acknowledged', async () => {
    const store = await TerminalStore.open(db);
    for (const s of [3n, 1n, 2n]) await store.recordTap(tapAt(s));
    expect((await store.unsentTaps(10)).map((t) => t.tapId)).to.deep.equal(['T1:1', 'T1:2', 'T1:3']);
    expect((await store.unsentTaps(10))[0]).to.deep.equal({ ...tapAt(1n), repeatOfTapId: undefined, cardLastCompleted: undefined });
    expect((await store.unsentTaps(2)).length).to.equal(2);

    const at = new Date('2026-03-15T10:00:00Z');
    await store.markAcked(['T1:1', 'T1:3'], at);
    expect((await store.unsentTaps(10)).map((t) => t.tapId)).to.deep.equal(['T1:2']);
    expect(await store.counts()).to.deep.include({ acceptedTapCount: 3, unsentTapCount: 1, lastForwardedAt: at });
  });

  it('refuses a second tap with the same id or sequence', async () => {
    const store = await TerminalStore.open(db);
    await store.recordTap(tapAt(1n));
    let error: unknown;
    await store.recordTap(tapAt(1n, 'C2')).catch((err) => (error = err));
    expect(error).to.be.instanceOf(Error);
    expect((await store.counts()).acceptedTapCount).to.equal(1);
  });

  it('commits the taps accepted during a commit together in the next one (group commit)', async () => {
    const store = await TerminalStore.open(db);
    let transactions = 0;
    db.on('query', (q: { sql: string }) => {
      if (/^BEGIN/i.test(q.sql)) transactions++;
    });
    // The first tap is committed at once; the 49 presented meanwhile share the next commit.
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.recordTap(tapAt(BigInt(i + 1)))));
    expect(transactions).to.equal(2);
    expect((await store.unsentTaps(100)).map((t) => t.terminalSequence)).to.deep.equal(Array.from({ length: 50 }, (_, i) => String(i + 1)));
  });

  it('fails only the tap that cannot be stored, not the others of its group', async () => {
    const store = await TerminalStore.open(db);
    await store.recordTap(tapAt(1n));
    const outcomes = await Promise.allSettled([tapAt(2n), tapAt(3n), tapAt(1n, 'C2'), tapAt(4n)].map((t) => store.recordTap(t)));
    expect(outcomes.map((o) => o.status)).to.deep.equal(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect((await store.unsentTaps(10)).map((t) => `${t.tapId}/${t.cardId}`)).to.deep.equal(['T1:1/C1', 'T1:2/C1', 'T1:3/C1', 'T1:4/C1']);
  });

  it('keeps a versioned deny list: each listing bumps the version', async () => {
    const store = await TerminalStore.open(db);
    expect(await store.counts()).to.deep.include({ denyListVersion: '0', denyListSize: 0, lastForwardedAt: undefined });
    expect(store.isDenyListed('C1')).to.equal(false);
    expect(await store.denyCard('C1', 'LOST')).to.equal('1');
    expect(await store.denyCard('C2', 'DEBT')).to.equal('2');
    expect(await store.denyCard('C1', 'CLONED')).to.equal('3');
    expect(store.isDenyListed('C1')).to.equal(true);
    expect(store.isDenyListed('C3')).to.equal(false);
    expect(await store.counts()).to.deep.include({ denyListVersion: '3', denyListSize: 2 });
    expect(await db('deny_list').where({ card_id: 'C1' }).first('reason')).to.deep.equal({ reason: 'CLONED' });
  });
});
