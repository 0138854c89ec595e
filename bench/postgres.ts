// The bench's PostgreSQL mode: fresh databases for the issuer and the
// authorizer on a PostgreSQL server for one run (dropped afterwards), and
// what that server promises for a committed write.
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';

export interface BenchDatabases {
  urls: { issuer: string; authorizer: string };
  /** The durability of the issuer's and the authorizer's writes, for the report. */
  durability(): Promise<Record<string, string>>;
  drop(): Promise<void>;
}

async function withAdmin<T>(serverUrl: string, fn: (db: Knex) => Promise<T>): Promise<T> {
  const db = knexFactory({ client: 'pg', connection: serverUrl, pool: { min: 0, max: 1 } });
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

/** Creates tapcredit_bench_<run>_{issuer,authorizer} on the server of serverUrl (a role that may CREATE DATABASE). */
export async function benchDatabases(serverUrl: string): Promise<BenchDatabases> {
  const run = randomBytes(4).toString('hex');
  const names = { issuer: `tapcredit_bench_${run}_issuer`, authorizer: `tapcredit_bench_${run}_authorizer` };
  const urlOf = (name: string) => {
    const u = new URL(serverUrl);
    u.pathname = `/${name}`;
    return u.toString();
  };
  await withAdmin(serverUrl, async (db) => {
    for (const name of Object.values(names)) await db.raw(`CREATE DATABASE ${name}`);
  });
  return {
    urls: { issuer: urlOf(names.issuer), authorizer: urlOf(names.authorizer) },
    durability: () =>
      withAdmin(serverUrl, async (db) => {
        const setting = async (name: string) => (await db.raw(`SHOW ${name}`)).rows[0][name];
        const version = String(await setting('server_version')).split(' ')[0];
        const what = `PostgreSQL ${version}, synchronous_commit=${await setting('synchronous_commit')}, fsync=${await setting('fsync')}`;
        return {
          issuer: `${what}: a tap is acknowledged to the terminal only once committed; several issuer replicas may share the database.`,
          authorizer: `${what}: every debit, ledger entry and settlement is committed before it is answered (money).`,
          'storage baseline': 'bare SQLite inserts (the PostgreSQL store has no baseline of its own): read the "of storage" column as against SQLite.',
        };
      }),
    drop: () =>
      withAdmin(serverUrl, async (db) => {
        for (const name of Object.values(names)) await db.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }),
  };
}
