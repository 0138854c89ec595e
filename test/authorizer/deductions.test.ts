// Deduct in the domain: one outcome per item, in order; debits booked on the
// double-entry ledger; declines stored; rejections not stored.
import { expect } from 'chai';
import { getAccount, setAccountState, topUp } from '../../authorizer/accounts.js';
import { revokeAgreement } from '../../authorizer/agreements.js';
import { deduct, findDeduction, type DeductItemInput } from '../../authorizer/deductions.js';
import { ledgerAccountId, ledgerViolations } from '../../authorizer/ledger.js';
import { CURRENCY, ISSUER, agreementFor, fundedAccount, rowCounts, tempDb, type TempDb } from './helpers.js';

describe('authorizer deductions (Deduct)', () => {
  let t: TempDb;
  beforeEach(async () => {
    t = await tempDb();
  });
  afterEach(async () => {
    expect(await ledgerViolations(t.db)).to.deep.equal([]);
    await t.close();
  });

  const fare = (requestId: string, agreementId: string, amount = 200n, currency = CURRENCY): DeductItemInput => ({
    requestId,
    agreementId,
    amount,
    currency,
    tappedAt: new Date('2030-01-02T08:00:00Z'),
  });
  const balance = async (accountId: string) => (await getAccount(t.db, accountId)).balance;

  it('debits a fare as a FARE transfer from the rider to payable-to-issuer, deduction id = transfer id', async () => {
    const acc = await fundedAccount(t.db, 1, 1_000n);
    const agr = await agreementFor(t.db, 1);
    const [r] = await deduct(t.db, ISSUER, [fare('T1:1', agr)]);
    expect(r.status).to.equal('DEBITED');
    const deductionId = (r as { deductionId: string }).deductionId;
    expect(deductionId).to.match(/^ded_/);
    expect(await balance(acc)).to.equal(800n);
    const entries = await t.db('ledger_entries').where({ transfer_id: deductionId }).orderBy('entry_id').select('ledger_account_id', 'kind', 'reference');
    expect(entries).to.deep.equal([
      { ledger_account_id: ledgerAccountId.issuerPayable(ISSUER, CURRENCY), kind: 'FARE', reference: 'T1:1' },
      { ledger_account_id: ledgerAccountId.rider(acc), kind: 'FARE', reference: 'T1:1' },
    ]);
    expect((await findDeduction(t.db, 'T1:1'))?.deductionId).to.equal(deductionId);
  });

  it('returns the first result for a repeated request id and debits once', async () => {
    const acc = await fundedAccount(t.db, 1, 1_000n);
    const agr = await agreementFor(t.db, 1);
    const first = await deduct(t.db, ISSUER, [fare('T1:1', agr)]);
    const before = await rowCounts(t.db);
    const again = await deduct(t.db, ISSUER, [fare('T1:1', agr)]);
    expect(again).to.deep.equal(first);
    expect(await rowCounts(t.db)).to.deep.equal(before);
    expect(await balance(acc)).to.equal(800n);
  });

  it('rejects a reused request id with another amount, agreement or currency (REQUEST_ID_REUSED), changing nothing', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const agr = await agreementFor(t.db, 1);
    const other = await agreementFor(t.db, 1, ISSUER, 'card-other');
    await deduct(t.db, ISSUER, [fare('T1:1', agr)]);
    const before = await rowCounts(t.db);
    expect((await deduct(t.db, ISSUER, [fare('T1:1', agr, 300n)]))[0]).to.include({ status: 'REJECTED', errorReason: 'REQUEST_ID_REUSED' });
    expect((await deduct(t.db, ISSUER, [fare('T1:1', other)]))[0]).to.include({ status: 'REJECTED', errorReason: 'REQUEST_ID_REUSED' });
    expect((await deduct(t.db, ISSUER, [fare('T1:1', agr, 200n, 'USD')]))[0]).to.include({ status: 'REJECTED', errorReason: 'REQUEST_ID_REUSED' });
    expect(await rowCounts(t.db)).to.deep.equal(before);
  });

  it('rejects an unknown agreement and another issuer\'s agreement as AGREEMENT_NOT_FOUND, storing nothing', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const theirs = await agreementFor(t.db, 1, 'issuer-2');
    const before = await rowCounts(t.db);
    const results = await deduct(t.db, ISSUER, [fare('T1:1', 'agr_unknown'), fare('T1:2', theirs)]);
    expect(results.map((r) => r.status === 'REJECTED' && r.errorReason)).to.deep.equal(['AGREEMENT_NOT_FOUND', 'AGREEMENT_NOT_FOUND']);
    expect(await rowCounts(t.db)).to.deep.equal(before);
  });

  it('rejects a fare in another currency than the account\'s (CURRENCY_MISMATCH)', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const agr = await agreementFor(t.db, 1);
    const before = await rowCounts(t.db);
    expect((await deduct(t.db, ISSUER, [fare('T1:1', agr, 200n, 'USD')]))[0]).to.include({ status: 'REJECTED', errorReason: 'CURRENCY_MISMATCH' });
    expect(await rowCounts(t.db)).to.deep.equal(before);
  });

  describe('declines, stored so that a repeat returns them', () => {
    it('INSUFFICIENT_FUNDS when balance plus credit is below the amount, even after a later top-up', async () => {
      const acc = await fundedAccount(t.db, 1, 100n);
      const agr = await agreementFor(t.db, 1);
      const [first] = await deduct(t.db, ISSUER, [fare('T1:1', agr)]);
      expect(first).to.include({ status: 'DECLINED', declineReason: 'INSUFFICIENT_FUNDS' });
      await topUp(t.db, { requestId: 'top-more', fingerprint: 'x', accountId: acc, amount: 1_000n, currency: CURRENCY });
      expect((await deduct(t.db, ISSUER, [fare('T1:1', agr)]))[0]).to.deep.equal(first);
      expect(await balance(acc)).to.equal(1_100n);
    });

    it('AGREEMENT_REVOKED', async () => {
      await fundedAccount(t.db, 1, 1_000n);
      const agr = await agreementFor(t.db, 1);
      await revokeAgreement(t.db, agr);
      expect((await deduct(t.db, ISSUER, [fare('T1:1', agr)]))[0]).to.include({ status: 'DECLINED', declineReason: 'AGREEMENT_REVOKED' });
    });

    it('ACCOUNT_FROZEN', async () => {
      const acc = await fundedAccount(t.db, 1, 1_000n);
      const agr = await agreementFor(t.db, 1);
      await setAccountState(t.db, acc, 'FROZEN');
      expect((await deduct(t.db, ISSUER, [fare('T1:1', agr)]))[0]).to.include({ status: 'DECLINED', declineReason: 'ACCOUNT_FROZEN' });
      expect(await balance(acc)).to.equal(1_000n);
    });

    it('LIMIT_EXCEEDED above the per-debit maximum', async () => {
      await fundedAccount(t.db, 1, 1_000_000n);
      const agr = await agreementFor(t.db, 1);
      const results = await deduct(t.db, ISSUER, [fare('T1:1', agr, 501n), fare('T1:2', agr, 500n)], { maxDebitMinorUnits: 500n });
      expect(results.map((r) => r.status)).to.deep.equal(['DECLINED', 'DEBITED']);
      expect(results[0]).to.include({ declineReason: 'LIMIT_EXCEEDED' });
    });
  });

  it('lets a rider with credit go down to -credit_limit and no further', async () => {
    const acc = await fundedAccount(t.db, 1, 100n, 300n);
    const agr = await agreementFor(t.db, 1);
    const results = await deduct(t.db, ISSUER, [fare('T1:1', agr), fare('T1:2', agr), fare('T1:3', agr)]);
    expect(results.map((r) => r.status)).to.deep.equal(['DEBITED', 'DEBITED', 'DECLINED']);
    expect(await balance(acc)).to.equal(-300n);
  });

  it('decides a batch in request order, so later items see earlier debits, and answers one result per item', async () => {
    await fundedAccount(t.db, 1, 500n);
    await fundedAccount(t.db, 2, 500n);
    const a1 = await agreementFor(t.db, 1);
    const a2 = await agreementFor(t.db, 2);
    const results = await deduct(t.db, ISSUER, [fare('T1:1', a1), fare('T1:2', a2), fare('T1:3', a1), fare('T1:4', 'agr_x'), fare('T1:5', a1)]);
    expect(results.map((r) => r.requestId)).to.deep.equal(['T1:1', 'T1:2', 'T1:3', 'T1:4', 'T1:5']);
    expect(results.map((r) => r.status)).to.deep.equal(['DEBITED', 'DEBITED', 'DEBITED', 'REJECTED', 'DECLINED']);
  });

  it('debits a batch of 5000 fares in one transaction, quickly', async function () {
    this.timeout(60_000);
    const accounts = 50;
    const agreements: string[] = [];
    for (let i = 0; i < accounts; i++) {
      await fundedAccount(t.db, i, 1_000_000n);
      agreements.push(await agreementFor(t.db, i));
    }
    const items = Array.from({ length: 5000 }, (_, i) => fare(`T1:${i}`, agreements[i % accounts]));
    const started = Date.now();
    const results = await deduct(t.db, ISSUER, items);
    const ms = Date.now() - started;
    expect(results.every((r) => r.status === 'DEBITED')).to.equal(true);
    expect(ms, `5000 debits took ${ms} ms`).to.be.below(10_000);
    expect(await balance('acc-0')).to.equal(1_000_000n - 100n * 200n);
    const again = await deduct(t.db, ISSUER, items);
    expect(again).to.deep.equal(results);
  });
});
