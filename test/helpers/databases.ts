// Databases for integration tests: a SQLite file in the test's temp
// directory, or a fresh PostgreSQL database per service and run when
// TAPCREDIT_TEST_POSTGRES_URL is set (CI sets it), so runs never collide.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import knexFactory from 'knex';

export type Backend = 'sqlite' | 'postgres';

export const POSTGRES_URL = process.env.TAPCREDIT_TEST_POSTGRES_URL;

/** The backends the integration suite runs on: SQLite always, PostgreSQL when configured. */
export const backends = (): Backend[] => (POSTGRES_URL ? ['sqlite', 'postgres'] : ['sqlite']);

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(fn: (db: knexFactory.Knex) => Promise<T>): Promise<T> {
  const db = knexFactory({ client: 'pg', connection: POSTGRES_URL, pool: { min: 0, max: 1 } });
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

export interface TestDatabases {
  /** A database URL for a service (e.g. "issuer"). */
  url(service: string): Promise<string>;
  /** Drops what was created. */
  drop(): Promise<void>;
}

export function testDatabases(backend: Backend, dir: string): TestDatabases {
  if (backend === 'sqlite') return { url: async (service) => join(dir, `${service}.sqlite`), drop: async () => {} };
  if (!POSTGRES_URL) throw new Error('TAPCREDIT_TEST_POSTGRES_URL is not set');
  const run = randomBytes(4).toString('hex');
  const created: string[] = [];
  return {
    async url(service) {
      const name = `tapcredit_${run}_${service.replace(/[^a-z0-9]/gi, '_').toLowerCase()}`;
      await admin((db) => db.raw(`CREATE DATABASE ${name}`));
      created.push(name);
      return withDatabase(POSTGRES_URL, name);
    },
    async drop() {
      await admin(async (db) => {
        for (const name of created) await db.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
    },
  };
}
