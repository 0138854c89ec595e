// Leases on outbox rows (common/leases.ts), on every backend: claims of two
// replicas never overlap, a live claim is respected, an expired one is taken
// over, a release frees only the releaser's rows.
import { expect } from 'chai';
import { openDatabase, type Db } from '../../common/db.js';
import { Leases, addLeaseColumns, type ClaimSpec } from '../../common/leases.js';
import { removeDir, tempDir } from '../helpers/assert.js';
import { backends, testDatabases, type TestDatabases } from '../helpers/databases.js';

const ROWS = 300;
const spec = (limit: number): ClaimSpec => ({
  table: 'outbox',
  key: 'item_id',
  candidates: (q) => q.where({ state: 'PENDING' }).orderBy('seq'),
  limit,
});

for (const backend of backends())
  describe(`outbox leases (${backend})`, () => {
    let dir: string;
    let databases: TestDatabases;
    let db: Db;
    let clock: number;
    const replica = (owner: string, ttlMs = 1_000) => new Leases({ owner, ttlMs, now: () => clock });
    const claim = (leases: Leases, limit: number) => db.transaction((trx) => leases.claim(trx, spec(limit)));

    beforeEach(async () => {
      clock = 1_000_000;
      dir = tempDir();
      databases = testDatabases(backend, dir);
      db = await openDatabase({
        url: await databases.url('leases'),
        migrationsTable: 'lease_test_migrations',
        migrations: [
          {
            name: '001_outbox',
            async up(db) {
              await db.schema.createTable('outbox', (t) => {
                t.increments('seq').primary();
                t.string('item_id', 64).notNullable().unique();
                t.string('state', 16).notNullable();
              });
              await db.schema.alterTable('outbox', (t) => addLeaseColumns(t));
            },
          },
        ],
      });
      const rows = Array.from({ length: ROWS }, (_, i) => ({ item_id: `item-${String(i).padStart(4, '0')}`, state: 'PENDING' }));
      for (let i = 0; i < rows.length; i += 100) await db('outbox').insert(rows.slice(i, i + 100));
    });
    afterEach(async () => {
      await db.destroy();
      await databases.drop();
      removeDir(dir);
    });

    it('gives concurrent claimers disjoint batches, oldest first, until every row is claimed once', async () => {
      const replicas = [replica('a'), replica('b'), replica('c')];
      const got = new Map<string, string>();
      for (let round = 0; round < 20 && got.size < ROWS; round++) {
        const claims = await Promise.all(replicas.map((r) => claim(r, 40)));
        // Nobody comes away empty while rows are left: claimers skip each other's rows instead of contending for them.
        const left = ROWS - got.size;
        expect(claims.map((c) => c.keys.length).reduce((a, b) => a + b), `round ${round}`).to.equal(Math.min(left, 120));
        for (const c of claims) {
          for (const key of c.keys) {
            expect(got.has(key), `${key} claimed by ${got.get(key)} and ${c.token}`).to.equal(false);
            got.set(key, c.token);
          }
        }
      }
      expect(got.size).to.equal(ROWS);
      const rows = await db('outbox').whereNull('claimed_by').count({ n: '*' });
      expect(Number(rows[0].n)).to.equal(0);
      expect((await claim(replica('d'), 40)).keys, 'all held').to.deep.equal([]);
    });

    it('takes the oldest rows first and records the claim with its expiry', async () => {
      const a = replica('a', 5_000);
      const c = await claim(a, 3);
      expect(c.keys).to.deep.equal(['item-0000', 'item-0001', 'item-0002']);
      expect(c.token).to.match(/^a#\d+$/);
      const row = await db('outbox').where({ item_id: 'item-0000' }).first('claimed_by', db.raw('CAST(claim_expires_at AS TEXT) AS expires'));
      expect(row).to.deep.equal({ claimed_by: c.token, expires: String(clock + 5_000) });
    });

    it('leaves a live claim alone and takes an expired one over', async () => {
      const a = replica('a', 1_000);
      const b = replica('b', 1_000);
      const first = await claim(a, 10);
      expect((await claim(b, 10)).keys, 'the next rows, not a\'s').to.deep.equal(Array.from({ length: 10 }, (_, i) => `item-${String(i + 10).padStart(4, '0')}`));
      clock += 999;
      const before = await claim(b, 5);
      expect(before.keys.some((k) => first.keys.includes(k)), 'a still holds its rows').to.equal(false);
      clock += 1; // a's claim expires now (a died): b takes its rows over, oldest first
      const after = await claim(b, 10);
      expect(after.keys).to.deep.equal(first.keys);
    });

    it('releases only the rows of the claim it is given, so a stale holder cannot free a takeover', async () => {
      const a = replica('a', 1_000);
      const b = replica('b', 1_000);
      const stale = await claim(a, 5);
      clock += 1_000;
      const takeover = await claim(b, 5);
      expect(takeover.keys).to.deep.equal(stale.keys);
      await a.release(db, 'outbox', 'item_id', stale); // a comes back and gives up what it no longer holds
      expect((await claim(replica('c'), 5)).keys.some((k) => takeover.keys.includes(k)), 'b still holds them').to.equal(false);
      await b.release(db, 'outbox', 'item_id', takeover);
      expect((await claim(replica('c'), 5)).keys).to.deep.equal(takeover.keys);
    });

    it('never claims rows outside the candidates', async () => {
      await db('outbox').whereIn('item_id', ['item-0000', 'item-0002']).update({ state: 'DONE' });
      expect((await claim(replica('a'), 3)).keys).to.deep.equal(['item-0001', 'item-0003', 'item-0004']);
    });
  });
