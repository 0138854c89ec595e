// The settlement outbox in the domain, with the issuer replaced by a function:
// batches are fixed once formed, re-sent unchanged until acknowledged, and
// an acknowledgement moves the matched total from payable to paid once.
import { expect } from 'chai';
import { deduct } from '../../authorizer/deductions.js';
import { ledgerAccountId, ledgerViolations } from '../../authorizer/ledger.js';
import {
  acknowledgeSettlement,
  listSettlements,
  nextSettlement,
  settlementStep,
  type SettlementAck,
  type SettlementBatch,
} from '../../authorizer/settlement.js';
import { asText } from '../../common/db.js';
import { createLogger } from '../../common/log.js';
import { CURRENCY, ISSUER, agreementFor, fundedAccount, tempDb, type TempDb } from './helpers.js';

const log = createLogger('test');
const allMatched = (batch: SettlementBatch): SettlementAck => ({
  results: batch.items.map((i) => ({ tapId: i.tapId, matched: true, reason: '' })),
  matchedTotal: batch.total,
});

describe('authorizer settlement outbox', () => {
  let t: TempDb;
  beforeEach(async () => {
    t = await tempDb();
  });
  afterEach(async () => {
    expect(await ledgerViolations(t.db)).to.deep.equal([]);
    await t.close();
  });

  async function balanceOf(ledgerAccount: string): Promise<bigint> {
    const row = await t.db('ledger_accounts').where({ ledger_account_id: ledgerAccount }).first(asText(t.db, 'balance'));
    return row ? BigInt(row.balance) : 0n;
  }

  async function debit(n: number, fares: number, issuerId = ISSUER, amount = 200n): Promise<string[]> {
    await fundedAccount(t.db, n, 1_000_000n);
    const agr = await agreementFor(t.db, n, issuerId);
    const items = Array.from({ length: fares }, (_, i) => ({ requestId: `T${n}:${i}`, agreementId: agr, amount, currency: CURRENCY }));
    const results = await deduct(t.db, issuerId, items);
    return results.map((r) => (r.status === 'DEBITED' ? r.deductionId : ''));
  }

  it('forms a batch of unsettled debits, oldest first, with their total, and hands the same batch out until acknowledged', async () => {
    const deductionIds = await debit(1, 3);
    const batch = (await nextSettlement(t.db, ISSUER))!;
    expect(batch.settlementId).to.match(/^stl_/);
    expect(batch.items).to.deep.equal(deductionIds.map((deductionId, i) => ({ deductionId, tapId: `T1:${i}`, amount: 200n })));
    expect(batch.total).to.equal(600n);
    await debit(2, 1); // arrives while the batch is pending: not added to it
    expect(await nextSettlement(t.db, ISSUER)).to.deep.equal(batch);
  });

  it('limits a batch to batchSize items', async () => {
    await debit(1, 5);
    expect((await nextSettlement(t.db, ISSUER, 2))!.items.map((i) => i.tapId)).to.deep.equal(['T1:0', 'T1:1']);
  });

  it('settles each issuer separately and ignores declined deductions', async () => {
    await debit(1, 2, ISSUER);
    await debit(2, 1, 'issuer-2');
    await fundedAccount(t.db, 3, 100n);
    const [declined] = await deduct(t.db, ISSUER, [{ requestId: 'T3:0', agreementId: await agreementFor(t.db, 3), amount: 200n, currency: CURRENCY }]);
    expect(declined.status).to.equal('DECLINED');
    expect((await nextSettlement(t.db, ISSUER))!.items.map((i) => i.tapId)).to.deep.equal(['T1:0', 'T1:1']);
    expect((await nextSettlement(t.db, 'issuer-2'))!.items.map((i) => i.tapId)).to.deep.equal(['T2:0']);
    expect(await nextSettlement(t.db, 'issuer-3')).to.equal(undefined);
  });

  it('on acknowledgement books payable -> paid for the matched total, stores each answer, and books it only once', async () => {
    await debit(1, 3);
    const payable = ledgerAccountId.issuerPayable(ISSUER, CURRENCY);
    const paid = ledgerAccountId.issuerPaid(ISSUER, CURRENCY);
    expect(await balanceOf(payable)).to.equal(600n);
    const batch = (await nextSettlement(t.db, ISSUER))!;
    const ack: SettlementAck = {
      results: batch.items.map((i, n) => ({ tapId: i.tapId, matched: n !== 1, reason: n === 1 ? 'AMOUNT_MISMATCH' : '' })),
    };
    const done = await acknowledgeSettlement(t.db, batch.settlementId, ack);
    expect(done.matchedTotal).to.equal(400n);
    expect(done.mismatched.map((m) => [m.tapId, m.reason])).to.deep.equal([['T1:1', 'AMOUNT_MISMATCH']]);
    expect(await balanceOf(payable)).to.equal(200n); // the mismatched fare stays payable
    expect(await balanceOf(paid)).to.equal(400n);
    const rows = await t.db('deductions').orderBy('seq').select('request_id', 'settlement_id', 'settlement_status', 'settlement_reason');
    expect(rows.map((r) => [r.request_id, r.settlement_status, r.settlement_reason])).to.deep.equal([
      ['T1:0', 'MATCHED', null],
      ['T1:1', 'MISMATCHED', 'AMOUNT_MISMATCH'],
      ['T1:2', 'MATCHED', null],
    ]);

    const twice = await acknowledgeSettlement(t.db, batch.settlementId, ack);
    expect(twice.booked).to.equal(false);
    expect(await balanceOf(paid)).to.equal(400n);
    expect(await nextSettlement(t.db, ISSUER)).to.equal(undefined);
    expect((await listSettlements(t.db))[0]).to.include({ state: 'ACKNOWLEDGED', matchedTotal: 400n, mismatchedCount: 1 });
  });

  it('refuses an answer that does not line up with the items, leaving the settlement pending', async () => {
    await debit(1, 2);
    const batch = (await nextSettlement(t.db, ISSUER))!;
    let error: unknown;
    try {
      await acknowledgeSettlement(t.db, batch.settlementId, { results: [{ tapId: 'T1:0', matched: true, reason: '' }] });
    } catch (err) {
      error = err;
    }
    expect(String(error)).to.include('1 results for the 2 items');
    expect((await listSettlements(t.db))[0].state).to.equal('PENDING');
  });

  describe('settlementStep', () => {
    it('re-sends the same settlement after failures until acknowledged, then never again', async () => {
      await debit(1, 3);
      const sent: SettlementBatch[] = [];
      let failuresLeft = 2;
      const step = settlementStep({
        db: t.db,
        log,
        send: async (batch) => {
          sent.push(batch);
          if (failuresLeft-- > 0) throw new Error('UNAVAILABLE');
          return allMatched(batch);
        },
      });
      for (let i = 0; i < 2; i++) {
        let error: unknown;
        await step().catch((err) => (error = err));
        expect(String(error)).to.include('not acknowledged by issuer-1');
      }
      expect(await step()).to.equal(true);
      expect(await step()).to.equal(false);
      expect(sent).to.have.length(3);
      expect(sent[1]).to.deep.equal(sent[0]);
      expect(sent[2]).to.deep.equal(sent[0]);
      expect((await listSettlements(t.db))[0]).to.include({ state: 'ACKNOWLEDGED', attempts: 3, lastError: null });
      expect(await balanceOf(ledgerAccountId.issuerPaid(ISSUER, CURRENCY))).to.equal(600n);
    });

    it('keeps settling one issuer while another is unreachable', async () => {
      await debit(1, 1, ISSUER);
      await debit(2, 1, 'issuer-2');
      const step = settlementStep({
        db: t.db,
        log,
        send: async (batch) => {
          if (batch.issuerId === 'issuer-2') throw new Error('UNAVAILABLE');
          return allMatched(batch);
        },
      });
      await step().catch(() => undefined);
      const states = Object.fromEntries((await listSettlements(t.db)).map((s) => [s.issuerId, s.state]));
      expect(states).to.deep.equal({ [ISSUER]: 'ACKNOWLEDGED', 'issuer-2': 'PENDING' });
    });

    it('drains many debits in batches of batchSize', async () => {
      await debit(1, 25);
      const sizes: number[] = [];
      const step = settlementStep({ db: t.db, log, batchSize: 10, send: async (batch) => (sizes.push(batch.items.length), allMatched(batch)) });
      while (await step());
      expect(sizes).to.deep.equal([10, 10, 5]);
      expect(await balanceOf(ledgerAccountId.issuerPayable(ISSUER, CURRENCY))).to.equal(0n);
      expect(await balanceOf(ledgerAccountId.issuerPaid(ISSUER, CURRENCY))).to.equal(25n * 200n);
    });
  });
});
