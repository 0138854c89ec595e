// Riders' accounts and the double-entry ledger, against a real SQLite file.
import { expect } from 'chai';
import { getAccount, listLedgerEntries, openAccount, setAccountState, topUp } from '../../authorizer/accounts.js';
import { isHolder } from '../../authorizer/holders.js';
import { LedgerBook, ledgerAccountId, ledgerViolations } from '../../authorizer/ledger.js';
import { CURRENCY, digestOf, expectApiError, fundedAccount, holder, rowCounts, tempDb, type TempDb } from './helpers.js';

describe('authorizer accounts and ledger', () => {
  let t: TempDb;
  beforeEach(async () => {
    t = await tempDb();
  });
  afterEach(async () => {
    await t.close();
  });

  describe('openAccount', () => {
    it('opens an active account with zero balance, and available = balance + credit limit', async () => {
      const a = await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 500n });
      expect(a).to.include({ accountId: 'acc-1', state: 'ACTIVE', currency: CURRENCY, balance: 0n, creditLimit: 500n, available: 500n });
    });

    it('returns the same account when opened again with the same details', async () => {
      const first = await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      const again = await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      expect(again).to.deep.equal(first);
    });

    it('refuses to open an existing account id with other details (ACCOUNT_ALREADY_EXISTS)', async () => {
      await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      const before = await rowCounts(t.db);
      await expectApiError(openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(2)), currency: CURRENCY, creditLimit: 0n }), 'ACCOUNT_ALREADY_EXISTS');
      await expectApiError(openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: 'USD', creditLimit: 0n }), 'ACCOUNT_ALREADY_EXISTS');
      expect(await rowCounts(t.db)).to.deep.equal(before);
    });
  });

  describe('topUp', () => {
    it('credits the account through a TOP_UP transfer from the funding account', async () => {
      await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      const r = await topUp(t.db, { requestId: 'top-1', fingerprint: 'a', accountId: 'acc-1', amount: 1_000n, currency: CURRENCY });
      expect(r.account.balance).to.equal(1_000n);
      const entries = await t.db('ledger_entries').where({ transfer_id: r.transferId }).select('ledger_account_id', 'kind');
      expect(entries).to.have.deep.members([
        { ledger_account_id: ledgerAccountId.rider('acc-1'), kind: 'TOP_UP' },
        { ledger_account_id: ledgerAccountId.topUpFunding(CURRENCY), kind: 'TOP_UP' },
      ]);
      expect(await ledgerViolations(t.db)).to.deep.equal([]);
    });

    it('returns the first result for a repeated request id and credits once', async () => {
      await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      const first = await topUp(t.db, { requestId: 'top-1', fingerprint: 'a', accountId: 'acc-1', amount: 1_000n, currency: CURRENCY });
      await topUp(t.db, { requestId: 'top-2', fingerprint: 'b', accountId: 'acc-1', amount: 50n, currency: CURRENCY });
      const again = await topUp(t.db, { requestId: 'top-1', fingerprint: 'a', accountId: 'acc-1', amount: 1_000n, currency: CURRENCY });
      expect(again.transferId).to.equal(first.transferId);
      expect(again.account.balance).to.equal(1_000n); // the account as that top-up left it
      expect((await getAccount(t.db, 'acc-1')).balance).to.equal(1_050n);
    });

    it('refuses a reused request id with another payload (REQUEST_ID_REUSED)', async () => {
      await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      await topUp(t.db, { requestId: 'top-1', fingerprint: 'a', accountId: 'acc-1', amount: 1_000n, currency: CURRENCY });
      await expectApiError(topUp(t.db, { requestId: 'top-1', fingerprint: 'b', accountId: 'acc-1', amount: 2_000n, currency: CURRENCY }), 'REQUEST_ID_REUSED');
      expect((await getAccount(t.db, 'acc-1')).balance).to.equal(1_000n);
    });

    it('refuses an unknown account and a foreign currency, storing nothing', async () => {
      await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
      const before = await rowCounts(t.db);
      await expectApiError(topUp(t.db, { requestId: 'top-1', fingerprint: 'a', accountId: 'nope', amount: 1n, currency: CURRENCY }), 'ACCOUNT_NOT_FOUND');
      await expectApiError(topUp(t.db, { requestId: 'top-2', fingerprint: 'a', accountId: 'acc-1', amount: 1n, currency: 'USD' }), 'CURRENCY_MISMATCH');
      expect(await rowCounts(t.db)).to.deep.equal(before);
    });
  });

  it('freezes and reactivates an account', async () => {
    await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
    expect((await setAccountState(t.db, 'acc-1', 'FROZEN')).state).to.equal('FROZEN');
    expect((await setAccountState(t.db, 'acc-1', 'ACTIVE')).state).to.equal('ACTIVE');
    await expectApiError(setAccountState(t.db, 'nope', 'FROZEN'), 'ACCOUNT_NOT_FOUND');
  });

  it('matches a holder by name case-insensitively with blanks collapsed, and the phone exactly', () => {
    const h = digestOf({ name: 'Li  Wei', phoneNumber: '+8613800000001' });
    expect(isHolder(h, digestOf({ name: '  li wei ', phoneNumber: '+8613800000001' }))).to.equal(true);
    expect(isHolder(h, digestOf({ name: 'Li Wei', phoneNumber: '+8613800000002' }))).to.equal(false);
    expect(isHolder(h, digestOf({ name: 'Li Wen', phoneNumber: '+8613800000001' }))).to.equal(false);
  });

  it('lists entries newest first, a page at a time, with balance_after', async () => {
    await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 0n });
    for (let i = 1; i <= 5; i++) await topUp(t.db, { requestId: `top-${i}`, fingerprint: 'a', accountId: 'acc-1', amount: BigInt(i * 100), currency: CURRENCY });
    const first = await listLedgerEntries(t.db, 'acc-1', 2, '');
    expect(first.entries.map((e) => e.reference)).to.deep.equal(['top-5', 'top-4']);
    expect(first.entries.map((e) => e.balanceAfter)).to.deep.equal([1_500n, 1_000n]);
    const second = await listLedgerEntries(t.db, 'acc-1', 2, first.nextPageToken);
    expect(second.entries.map((e) => e.reference)).to.deep.equal(['top-3', 'top-2']);
    const last = await listLedgerEntries(t.db, 'acc-1', 2, second.nextPageToken);
    expect(last.entries.map((e) => e.reference)).to.deep.equal(['top-1']);
    expect(last.nextPageToken).to.equal('');
    await expectApiError(listLedgerEntries(t.db, 'acc-1', 2, 'garbage'), 'INVALID_ARGUMENT');
    await expectApiError(listLedgerEntries(t.db, 'nope', 2, ''), 'ACCOUNT_NOT_FOUND');
  });

  describe('LedgerBook', () => {
    it('refuses a transfer that would take a rider below -credit_limit', async () => {
      await fundedAccount(t.db, 1, 100n, 50n);
      const payable = ledgerAccountId.issuerPayable('issuer-1', CURRENCY);
      await t.db.transaction(async (trx) => {
        const book = new LedgerBook(trx);
        await book.load([ledgerAccountId.rider('acc-1'), payable]);
        book.useSystemAccount(payable, 'ISSUER_PAYABLE', CURRENCY, Date.now());
        expect(book.available(ledgerAccountId.rider('acc-1'))).to.equal(150n);
        const post = (transferId: string, amount: bigint) =>
          book.post({ transferId, kind: 'FARE', debitAccountId: ledgerAccountId.rider('acc-1'), creditAccountId: payable, amount, currency: CURRENCY, reference: transferId, bookedAt: 1 });
        expect(post('t1', 150n).debitBalanceAfter).to.equal(-50n);
        expect(() => post('t2', 1n)).to.throw().with.property('reason', 'INSUFFICIENT_FUNDS');
        await book.flush();
      });
      expect((await getAccount(t.db, 'acc-1')).balance).to.equal(-50n);
      expect(await ledgerViolations(t.db)).to.deep.equal([]);
    });

    it('has a database constraint that keeps a rider within its credit limit', async () => {
      await fundedAccount(t.db, 1, 100n);
      let error: unknown;
      try {
        await t.db('ledger_accounts').where({ ledger_account_id: ledgerAccountId.rider('acc-1') }).update({ balance: '-1' });
      } catch (err) {
        error = err;
      }
      expect(String(error)).to.match(/constraint/i);
    });

    it('reports a balance that no longer matches its entries', async () => {
      await fundedAccount(t.db, 1, 100n);
      expect(await ledgerViolations(t.db)).to.deep.equal([]);
      await t.db('ledger_accounts').where({ ledger_account_id: ledgerAccountId.rider('acc-1') }).update({ balance: '90' });
      const problems = await ledgerViolations(t.db);
      expect(problems.join('\n')).to.include('rider:acc-1 balance 90 differs from the sum of its entries 100');
    });

    it('reports a transfer whose entries do not sum to zero', async () => {
      await fundedAccount(t.db, 1, 100n);
      await t.db('ledger_entries').where({ ledger_account_id: ledgerAccountId.topUpFunding(CURRENCY) }).update({ amount: '-99' });
      expect((await ledgerViolations(t.db)).join('\n')).to.match(/sums to 1, not 0/);
    });
  });
});
