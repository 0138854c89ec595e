import { join } from 'node:path';
import { expect } from 'chai';
import { asText, insertRows, openDatabase, raiseColumn, snapshot, type Db } from '../common/db.js';
import { removeDir, tempDir } from './helpers/assert.js';
import { backends, testDatabases, type TestDatabases } from './helpers/databases.js';

for (const backend of backends()) {
  describe(`raiseColumn and snapshot (${backend})`, () => {
    let dir: string;
    let databases: TestDatabases;
    let db: Db;
    const open = (url: string) =>
      openDatabase({
        url,
        migrationsTable: 'db_test_migrations',
        migrations: [
          {
            name: '001_counters',
            async up(k) {
              await k.schema.createTable('counters', (t) => {
                t.string('id', 16).primary();
                t.bigInteger('value').nullable();
                t.bigInteger('updated_at').notNullable();
              });
            },
          },
        ],
      });
    let url: string;

    beforeEach(async () => {
      dir = tempDir();
      databases = testDatabases(backend, dir);
      url = backend === 'sqlite' ? join(dir, 'db.sqlite') : await databases.url('db');
      db = await open(url);
      await db('counters').insert([
        { id: 'a', value: '5', updated_at: '0' },
        { id: 'b', value: '9', updated_at: '0' },
        { id: 'c', value: null, updated_at: '0' },
        { id: 'd', value: '1', updated_at: '0' },
      ]);
    });
    afterEach(async () => {
      await db.destroy();
      await databases.drop();
      removeDir(dir);
    });

    const rows = async () => db('counters').orderBy('id').select('id', asText(db, 'value'), asText(db, 'updated_at'));

    it('raises each row to its own value only where that is higher, and touches only the rows that moved', async () => {
      const big = (2n ** 62n + 1n).toString();
      await raiseColumn(db, 'counters', 'id', 'value', new Map([['a', '7'], ['b', '3'], ['c', big], ['x', '4']]), { updated_at: '42' });
      expect(await rows()).to.deep.equal([
        { id: 'a', value: '7', updated_at: '42' },
        { id: 'b', value: '9', updated_at: '0' },
        { id: 'c', value: big, updated_at: '42' },
        { id: 'd', value: '1', updated_at: '0' },
      ]);
    });

    it('snapshot: reads inside see one moment, whatever another connection commits meanwhile', async () => {
      const other = await open(url);
      try {
        const count = async (q: Db) => Number((await q('counters').count({ n: '*' }))[0].n);
        const seen = await snapshot(db, async (trx) => {
          const before = await count(trx);
          await other('counters').insert({ id: 'e', value: '1', updated_at: '0' });
          return [before, await count(trx)];
        });
        expect(seen).to.deep.equal([4, 4]);
        expect(await count(db)).to.equal(5);
      } finally {
        await other.destroy();
      }
    });

    it('works through more rows than one statement takes', async () => {
      await db.batchInsert('counters', Array.from({ length: 900 }, (_, i) => ({ id: `n${i}`, value: '0', updated_at: '0' })), 300);
      await raiseColumn(db, 'counters', 'id', 'value', new Map(Array.from({ length: 900 }, (_, i) => [`n${i}`, String(i + 1)])));
      const [sum] = await db('counters').where('id', 'like', 'n%').select(db.raw('CAST(SUM(value) AS TEXT) AS total'));
      expect(sum.total).to.equal(String((900 * 901) / 2));
    });
  });
}

for (const backend of backends()) {
  describe(`insertRows (${backend})`, () => {
    let dir: string;
    let databases: TestDatabases;
    let db: Db;

    beforeEach(async () => {
      dir = tempDir();
      databases = testDatabases(backend, dir);
      db = await openDatabase({
        url: backend === 'sqlite' ? join(dir, 'db.sqlite') : await databases.url('db'),
        migrationsTable: 'db_test_migrations',
        migrations: [
          {
            name: '001_rows',
            async up(k) {
              await k.schema.createTable('rows', (t) => {
                t.increments('id').primary();
                t.string('name', 16).notNullable();
                t.bigInteger('amount').notNullable();
                t.binary('bytes').nullable();
                t.integer('retries').notNullable().defaultTo(0);
              });
            },
          },
        ],
      });
    });
    afterEach(async () => {
      await db.destroy();
      await databases.drop();
      removeDir(dir);
    });

    it('inserts every row with its values, in order, whatever the key order of each row; omitted columns take their default', async () => {
      const big = (2n ** 63n - 1n).toString();
      await insertRows(db, 'rows', [
        { name: 'a', amount: '1', bytes: Buffer.from([1, 2]) },
        { bytes: null, amount: big, name: 'b' },
      ]);
      const rows = await db('rows').orderBy('id').select('name', asText(db, 'amount'), 'bytes', 'retries');
      expect(rows.map((r) => ({ ...r, bytes: r.bytes === null ? null : [...r.bytes] }))).to.deep.equal([
        { name: 'a', amount: '1', bytes: [1, 2], retries: 0 },
        { name: 'b', amount: big, bytes: null, retries: 0 },
      ]);
    });

    it('refuses rows whose columns differ, and inserts nothing', async () => {
      let error: unknown;
      await insertRows(db, 'rows', [{ name: 'a', amount: '1' }, { name: 'b', retries: 2 }]).catch((err) => (error = err));
      expect(String(error)).to.match(/no amount|different columns/);
      expect(await db('rows').count({ n: '*' })).to.deep.equal([{ n: backend === 'sqlite' ? 0 : '0' }]);
    });
  });
}
