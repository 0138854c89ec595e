// Shared setup of the authorizer's tests: a real SQLite file in a fresh temp
// directory with the authorizer's migrations, and a few domain shortcuts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAccount, topUp, type RiderDetails } from '../../authorizer/accounts.js';
import { authorizeEnrollment } from '../../authorizer/agreements.js';
import { holderDigest, type HolderDigest } from '../../authorizer/holders.js';
import { MIGRATIONS_TABLE, migrations } from '../../authorizer/migrations.js';
import { openDatabase, type Db } from '../../common/db.js';
import { newId } from '../../common/ids.js';

export const CURRENCY = 'CNY';
export const ISSUER = 'issuer-1';

export interface TempDb {
  db: Db;
  dir: string;
  close(): Promise<void>;
}

export async function tempDb(): Promise<TempDb> {
  const dir = mkdtempSync(join(tmpdir(), 'tapcredit-authorizer-'));
  const db = await openDatabase({ url: join(dir, 'authorizer.sqlite'), migrations, migrationsTable: MIGRATIONS_TABLE });
  return {
    db,
    dir,
    async close() {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const holder = (n: number | string): RiderDetails => ({ name: `Rider ${n}`, phoneNumber: `+8613800${String(n).padStart(6, '0').slice(-6)}` });

/** The key of the holder digests in domain tests. */
export const HOLDER_KEY = Buffer.alloc(32, 7);

/** A rider's details as the domain takes them: keyed hashes. */
export const digestOf = (rider: RiderDetails): HolderDigest => holderDigest(HOLDER_KEY, rider);

/** Opens account acc-<n>, tops it up with funds and returns its id. */
export async function fundedAccount(db: Db, n: number | string, funds: bigint, creditLimit = 0n): Promise<string> {
  const accountId = `acc-${n}`;
  await openAccount(db, { accountId, holder: digestOf(holder(n)), currency: CURRENCY, creditLimit });
  if (funds > 0n) await topUp(db, { requestId: newId('req'), fingerprint: 'fp', accountId, amount: funds, currency: CURRENCY });
  return accountId;
}

/** Grants an agreement for a card of the issuer on the account opened by fundedAccount(n). */
export async function agreementFor(db: Db, n: number | string, issuerId = ISSUER, cardId = `card-${n}`): Promise<string> {
  const agreement = await authorizeEnrollment(db, {
    requestId: newId('enr'),
    fingerprint: 'fp',
    issuerId,
    accountId: `acc-${n}`,
    rider: digestOf(holder(n)),
    cardId,
  });
  return agreement.agreementId;
}

export { expectApiError } from '../helpers/assert.js';

/** Row counts of the authorizer's tables, to show that a refused call changed nothing. */
export async function rowCounts(db: Db): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of ['ledger_accounts', 'accounts', 'transfers', 'ledger_entries', 'top_ups', 'agreements', 'deductions', 'settlements']) {
    counts[table] = Number((await db(table).count({ n: '*' }))[0].n);
  }
  return counts;
}
