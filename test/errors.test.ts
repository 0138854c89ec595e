// The one mapping of errors to gRPC status (common/errors.ts).
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import knexFactory from 'knex';
import { apiError, decodeErrorDetails, isTransientDatabaseError, MAX_ERROR_MESSAGE, toServiceError } from '../common/errors.js';
import { POSTGRES_URL, testDatabases } from './helpers/databases.js';
import { removeDir, tempDir } from './helpers/assert.js';

const decoded = (err: unknown) => {
  const e = toServiceError(err, 'test.tapcredit');
  return { code: e.code, message: e.details, reason: decodeErrorDetails(e as never).errorInfo?.reason };
};

describe('errors: mapping to gRPC status', () => {
  it('keeps an ApiError\'s code and reason, bounding its message', () => {
    expect(decoded(apiError('CARD_NOT_FOUND', 'card C1 is not known'))).to.deep.equal({ code: status.NOT_FOUND, message: 'card C1 is not known', reason: 'CARD_NOT_FOUND' });
    expect(decoded(apiError('CARD_NOT_FOUND', 'y'.repeat(100_000))).message).to.have.length(MAX_ERROR_MESSAGE);
  });

  it('answers INTERNAL for an unknown error, without its text', () => {
    expect(decoded(new Error('SELECT secret FROM keys failed'))).to.deep.equal({ code: status.INTERNAL, message: 'internal error; see server logs', reason: 'INTERNAL' });
  });

  it('answers ABORTED CONCURRENT_UPDATE for a serialization failure, a deadlock or a busy SQLite database: the request may be sent again', () => {
    for (const code of ['40001', '40P01', 'SQLITE_BUSY', 'SQLITE_LOCKED']) {
      expect(isTransientDatabaseError(Object.assign(new Error('rolled back'), { code })), code).to.equal(true);
      expect(decoded(Object.assign(new Error('rolled back'), { code }))).to.include({ code: status.ABORTED, reason: 'CONCURRENT_UPDATE' });
    }
    for (const code of ['23505', 'SQLITE_CONSTRAINT', undefined]) expect(isTransientDatabaseError(Object.assign(new Error('x'), { code }))).to.equal(false);
  });

  if (POSTGRES_URL)
    it('recognizes a real PostgreSQL deadlock as ABORTED', async () => {
      const dir = tempDir();
      const databases = testDatabases('postgres', dir);
      const db = knexFactory({ client: 'pg', connection: await databases.url('deadlock'), pool: { min: 0, max: 4 } });
      try {
        await db.schema.createTable('rows', (t) => {
          t.integer('id').primary();
          t.integer('n');
        });
        await db('rows').insert([{ id: 1, n: 0 }, { id: 2, n: 0 }]);
        // Two transactions lock the two rows in opposite orders: PostgreSQL aborts one of them.
        let locked = 0;
        const bothLocked = async () => {
          locked++;
          while (locked < 2) await new Promise((r) => setTimeout(r, 10));
        };
        const crosswise = (first: number, second: number) =>
          db.transaction(async (trx) => {
            await trx('rows').where({ id: first }).update({ n: 1 });
            await bothLocked();
            await trx('rows').where({ id: second }).update({ n: 1 });
          });
        const results = await Promise.allSettled([crosswise(1, 2), crosswise(2, 1)]);
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(failed).to.have.length(1);
        expect(decoded(failed[0].reason)).to.include({ code: status.ABORTED, reason: 'CONCURRENT_UPDATE' });
      } finally {
        await db.destroy();
        await databases.drop();
        removeDir(dir);
      }
    });
});
