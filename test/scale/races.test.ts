// What a second replica exposes, on PostgreSQL: two issuer or authorizer
// replicas (two connection pools on one database, each with its own leases)
// do the same work at the same moment, and every write still happens once.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { deduct, type DeductItemInput } from '../../authorizer/deductions.js';
import { ledgerAccountId, ledgerViolations } from '../../authorizer/ledger.js';
import { MIGRATIONS_TABLE as AUTHORIZER_MIGRATIONS, migrations as authorizerMigrations } from '../../authorizer/migrations.js';
import { acknowledgeSettlement, claimSettlement, type SettlementBatch } from '../../authorizer/settlement.js';
import { asText, openDatabase, toNumber, type Db } from '../../common/db.js';
import { Leases } from '../../common/leases.js';
import { createLogger } from '../../common/log.js';
import { DeductDeclineReason, DeductStatus } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { TapReportStatus } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import type { IssuerContext } from '../../issuer/context.js';
import { debtStep } from '../../issuer/debts.js';
import { deductStep } from '../../issuer/deductions.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { MIGRATIONS_TABLE as ISSUER_MIGRATIONS, migrations as issuerMigrations } from '../../issuer/migrations.js';
import { reportTaps } from '../../issuer/taps.js';
import { agreementFor, CURRENCY, fundedAccount, ISSUER } from '../authorizer/helpers.js';
import { removeDir, tempDir } from '../helpers/assert.js';
import { POSTGRES_URL, testDatabases, type TestDatabases } from '../helpers/databases.js';
import { FakeAuthorizer, enrollRequest, ISSUER_CODE, ISSUER_ID, newCard, tapsOf } from '../issuer/fixtures.js';

const count = async (q: Promise<{ n: unknown }[]>) => toNumber((await q)[0].n);

if (POSTGRES_URL)
  describe('two replicas at once on PostgreSQL', function () {
    this.timeout(60_000);
    let dir: string;
    let databases: TestDatabases;
    const pools: Db[] = [];
    const open = async (url: string, service: 'issuer' | 'authorizer') => {
      const db = await openDatabase(
        service === 'issuer'
          ? { url, migrations: issuerMigrations, migrationsTable: ISSUER_MIGRATIONS }
          : { url, migrations: authorizerMigrations, migrationsTable: AUTHORIZER_MIGRATIONS },
      );
      pools.push(db);
      return db;
    };

    before(() => {
      dir = tempDir();
      databases = testDatabases('postgres', dir);
    });
    after(async () => {
      for (const db of pools) await db.destroy();
      await databases.drop();
      removeDir(dir);
    });

    it('migrates a fresh database once when three replicas start at the same moment', async () => {
      const url = await databases.url('migrate');
      const dbs = await Promise.all([open(url, 'authorizer'), open(url, 'authorizer'), open(url, 'authorizer')]);
      const names = (await dbs[0](AUTHORIZER_MIGRATIONS).orderBy('id').select('name')).map((r) => r.name);
      expect(names).to.deep.equal(authorizerMigrations.map((m) => m.name));
      for (const db of dbs) expect(await count(db('settlements').count({ n: '*' }))).to.equal(0);
    });

    describe('issuer', () => {
      let ctxs: IssuerContext[];
      let fake: FakeAuthorizer;
      let clock: number;
      const masterKey = randomBytes(32);
      const { privateKey } = generateKeyPairSync('ed25519');

      before(async () => {
        const url = await databases.url('issuer');
        const [a, b] = await Promise.all([open(url, 'issuer'), open(url, 'issuer')]);
        fake = new FakeAuthorizer();
        clock = Date.now();
        const ctx = (db: Db, owner: string): IssuerContext => ({
          db,
          issuerId: ISSUER_ID,
          issuerCode: ISSUER_CODE,
          currencyCode: CURRENCY,
          masterKey,
          signingKey: privateKey,
          authorizer: fake,
          now: () => new Date(clock),
          log: createLogger('test', undefined, 'warn'),
          debtRetry: { baseMs: 1_000, maxMs: 1_000 },
          leases: new Leases({ owner }),
        });
        ctxs = [ctx(a, 'issuer-a'), ctx(b, 'issuer-b')];
      });

      /** Enrolls `cards` cards and makes `perCard` taps of each at terminal T<round>. */
      async function taps(round: number, cards: number, perCard: number): Promise<Tap[]> {
        const all: Tap[] = [];
        for (let c = 0; c < cards; c++) {
          const enrolled = enrollRequest(newCard(masterKey, `C${round}-${c}`), `enr-${round}-${c}`, `acc-${round}-${c}`);
          const agreementId = (await enrollCard(ctxs[0], enrolled.request)).enrollment!.agreementId;
          all.push(...tapsOf(enrolled.card, agreementId, `T${round}`, c * perCard + 1, perCard).taps);
        }
        return all;
      }

      it('stores a batch reported to both replicas at once exactly once: one STORED and one DUPLICATE per tap', async () => {
        for (let round = 1; round <= 3; round++) {
          const batch = await taps(round, 20, 10);
          const [first, second] = await Promise.all(ctxs.map((ctx) => reportTaps(ctx, { terminalId: `T${round}`, taps: batch })));
          batch.forEach((t, i) => {
            expect([first.results[i].status, second.results[i].status].sort(), t.tapId).to.deep.equal(
              [TapReportStatus.TAP_REPORT_STATUS_STORED, TapReportStatus.TAP_REPORT_STATUS_DUPLICATE].sort(),
            );
          });
          const db = ctxs[0].db;
          expect(await count(db('taps').where({ terminal_id: `T${round}` }).count({ n: '*' }))).to.equal(batch.length);
          const received = await count(db('tap_state_changes').where('tap_id', 'like', `T${round}:%`).where({ state: 'RECEIVED' }).count({ n: '*' }));
          expect(received, 'one RECEIVED per tap').to.equal(batch.length);
        }
      });

      it('sends each tap of the debit outbox once when both replicas drain it at once', async () => {
        const sent = () => [...fake.sentCounts().values()];
        let more = true;
        while (more) more = (await Promise.all(ctxs.map((ctx) => deductStep(ctx, 50)))).some(Boolean);
        const db = ctxs[0].db;
        const total = await count(db('taps').count({ n: '*' }));
        expect(sent().length, 'every tap sent').to.equal(total);
        expect(Math.max(...sent()), 'no tap sent twice').to.equal(1);
        expect(fake.deductCalls.length, 'both replicas sent batches').to.be.greaterThan(2);
        expect(await count(db('taps').whereNot({ state: 'DEDUCTED' }).count({ n: '*' }))).to.equal(0);
        expect(await count(db('taps').whereNotNull('claimed_by').count({ n: '*' })), 'every claim ended with its outcome').to.equal(0);
      });

      it('starts one retry per debt when both replicas retry debts at once', async () => {
        const batch = await taps(9, 30, 1);
        await reportTaps(ctxs[0], { terminalId: 'T9', taps: batch });
        fake.decide = () => ({ status: DeductStatus.DEDUCT_STATUS_DECLINED, deductionId: '', declineReason: DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS, errorReason: '', message: '' });
        await deductStep(ctxs[0]);
        clock += 2_000; // every debt is due
        const before = fake.deductCalls.length;
        const results = await Promise.all(ctxs.map((ctx) => debtStep(ctx, { batchSize: 10 })));
        const retried = fake.deductCalls.slice(before).flatMap((c) => c.items.map((i) => i.requestId));
        expect(retried.length, 'each replica sent a batch').to.equal(20);
        expect(new Set(retried).size, 'no attempt sent twice').to.equal(retried.length);
        expect(results.map((r) => r.retried)).to.deep.equal([10, 10]);
        const attempts = await ctxs[0].db('debit_attempts').select('tap_id', 'attempt');
        expect(attempts.length).to.equal(20);
        expect(new Set(attempts.map((a) => a.tap_id)).size, 'one attempt per tap').to.equal(20);
      });
    });

    describe('authorizer', () => {
      let dbs: Db[];
      const accounts = 10;
      const agreements: string[] = [];
      const items = (prefix: string, perAccount: number): DeductItemInput[] =>
        agreements.flatMap((agreementId, a) =>
          Array.from({ length: perAccount }, (_, i) => ({ requestId: `${prefix}-${a}-${i}`, agreementId, amount: 200n, currency: CURRENCY })),
        );

      before(async () => {
        const url = await databases.url('authorizer');
        dbs = await Promise.all([open(url, 'authorizer'), open(url, 'authorizer')]);
        for (let n = 0; n < accounts; n++) {
          await fundedAccount(dbs[0], n, 10_000_000n);
          agreements.push(await agreementFor(dbs[0], n));
        }
      });

      it('debits a request id sent to both replicas at once once, and a tap under two request ids once', async () => {
        for (let round = 0; round < 3; round++) {
          const batch = items(`r${round}`, 10);
          const [a, b] = await Promise.all(dbs.map((db) => deduct(db, ISSUER, batch)));
          expect(a).to.deep.equal(b);
          expect(a.every((o) => o.status === 'DEBITED')).to.equal(true);
        }
        // A debt retried under a new request id while the first is in flight: the tap is debited under one of them only.
        const first = items('tap', 5);
        const retry = first.map((i) => ({ ...i, requestId: `${i.requestId}:r1`, tapId: i.requestId }));
        const [a, b] = await Promise.all([deduct(dbs[0], ISSUER, first), deduct(dbs[1], ISSUER, retry)]);
        a.forEach((o, i) => expect([o.status, b[i].status].sort(), first[i].requestId).to.deep.equal(['DEBITED', 'REJECTED']));

        const debits = await count(dbs[0]('deductions').where({ status: 'DEBITED' }).count({ n: '*' }));
        expect(debits).to.equal(3 * 100 + 50);
        expect(await count(dbs[0]('transfers').where({ kind: 'FARE' }).count({ n: '*' }))).to.equal(debits);
        expect(await ledgerViolations(dbs[0])).to.deep.equal([]);
      });

      it('never puts a debit into two settlements when both replicas form settlements at once, and books each acknowledgement once', async () => {
        await Promise.all(dbs.map((db, i) => deduct(db, ISSUER, items(`s${i}`, 50))));
        const replicas = dbs.map((db, i) => ({ db, leases: new Leases({ owner: `authorizer-${i}` }) }));
        const batches: SettlementBatch[] = [];
        // Each replica forms settlements of 37 until none is left; their claims stay live, so neither takes the other's.
        await Promise.all(
          replicas.map(async ({ db, leases }) => {
            for (;;) {
              const claimed = await claimSettlement(db, leases, ISSUER, 37);
              if (!claimed) return;
              batches.push(claimed.batch);
            }
          }),
        );
        const ids = batches.flatMap((b) => b.items.map((i) => i.deductionId));
        expect(new Set(ids).size, 'no debit in two settlements').to.equal(ids.length);
        const db = dbs[0];
        expect(ids.length, 'every debit settled').to.equal(await count(db('deductions').where({ status: 'DEBITED' }).count({ n: '*' })));
        for (const b of batches) {
          expect(b.items.length, b.settlementId).to.be.within(1, 37);
          expect(b.total, b.settlementId).to.equal(b.items.reduce((s, i) => s + i.amount, 0n));
          const row = await db('settlements').where({ settlement_id: b.settlementId }).first('item_count', asText(db, 'total'));
          expect([toNumber(row.item_count), BigInt(row.total)]).to.deep.equal([b.items.length, b.total]);
        }
        expect(new Set(batches.map((b) => b.settlementId)).size).to.equal(batches.length);

        // Both replicas record the issuer's acknowledgement of every settlement at the same moment.
        const booked = await Promise.all(
          batches.map((b) =>
            Promise.all(dbs.map((d) => acknowledgeSettlement(d, b.settlementId, { results: b.items.map((i) => ({ tapId: i.tapId, matched: true, reason: '' })) }))),
          ),
        );
        for (const pair of booked) expect(pair.map((d) => d.booked).sort(), pair[0].settlementId).to.deep.equal([false, true]);
        const paid = await db('ledger_accounts').where({ ledger_account_id: ledgerAccountId.issuerPaid(ISSUER, CURRENCY) }).first(asText(db, 'balance'));
        const settled = batches.reduce((s, b) => s + b.total, 0n);
        expect(BigInt(paid.balance)).to.equal(settled);
        expect(await count(db('transfers').where({ kind: 'SETTLEMENT' }).count({ n: '*' }))).to.equal(batches.length);
        expect(await ledgerViolations(db)).to.deep.equal([]);
      });
    });
  });
