import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { DeductDeclineReason, DeductStatus } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { SettlementItemStatus, TapState, type SettleRequest } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { listCardTaps } from '../../issuer/cards.js';
import { deductStep } from '../../issuer/deductions.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { settle } from '../../issuer/settlement.js';
import { reportTaps } from '../../issuer/taps.js';
import { declineWith, enrollRequest, expectApiError, money, newCard, openTestIssuer, tableCounts, tapsOf, type TestIssuer } from './fixtures.js';

const { SETTLEMENT_ITEM_STATUS_MATCHED: MATCHED, SETTLEMENT_ITEM_STATUS_MISMATCHED: MISMATCHED } = SettlementItemStatus;

const item = (tapId: string, amount = 200n, deductionId = `ded-${tapId}`) => ({ deductionId, tapId, amount: money(amount) });
const batch = (settlementId: string, items: ReturnType<typeof item>[]): SettleRequest => ({
  settlementId,
  authorizerId: 'authorizer-1',
  items,
  total: money(items.reduce((s, i) => s + BigInt(i.amount.minorUnits), 0n)),
});

describe('issuer: Settle', () => {
  let t: TestIssuer;
  const stateOf = async (tapId: string) => (await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 500, pageToken: '' })).taps.find((h) => h.tap!.tapId === tapId)!;

  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    // T1:1..3 debited, T1:4 declined, T1:5 still RECEIVED.
    t.authorizer.decide = (i) =>
      i.requestId === 'T1:4'
        ? declineWith(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS)()
        : { status: DeductStatus.DEDUCT_STATUS_DEBITED, deductionId: `ded-${i.requestId}`, declineReason: 0, errorReason: '', message: '' };
    const { taps } = tapsOf(enrolled.card, agreementId, 'T1', 1, 5);
    await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(0, 4) });
    await deductStep(t.ctx);
    await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(4) });
  });
  afterEach(() => t.close());

  it('marks matching taps SETTLED with the settlement id', async () => {
    const response = await settle(t.ctx, batch('S1', [item('T1:1'), item('T1:2')]));
    expect(response).to.deep.equal({
      settlementId: 'S1',
      results: [
        { tapId: 'T1:1', status: MATCHED, reason: '' },
        { tapId: 'T1:2', status: MATCHED, reason: '' },
      ],
      matchedTotal: money(400),
      mismatchedCount: 0,
    });
    const tap = await stateOf('T1:1');
    expect([tap.state, tap.settlementId]).to.deep.equal([TapState.TAP_STATE_SETTLED, 'S1']);
    expect(tap.history.map((h) => h.state).at(-1)).to.equal(TapState.TAP_STATE_SETTLED);
  });

  it('reports every kind of mismatch per item, stores it for reconciliation and leaves those taps unchanged', async () => {
    await settle(t.ctx, batch('S1', [item('T1:1')]));
    const response = await settle(
      t.ctx,
      batch('S2', [item('T1:9'), item('T1:4'), item('T1:5'), item('T1:2', 200n, 'ded-other'), item('T1:3', 150n), item('T1:1')]),
    );
    expect(response.results.map((r) => [r.tapId, r.status, r.reason])).to.deep.equal([
      ['T1:9', MISMATCHED, 'UNKNOWN_TAP'],
      ['T1:4', MISMATCHED, 'TAP_NOT_DEDUCTED'],
      ['T1:5', MISMATCHED, 'TAP_NOT_DEDUCTED'],
      ['T1:2', MISMATCHED, 'DEDUCTION_ID_MISMATCH'],
      ['T1:3', MISMATCHED, 'AMOUNT_MISMATCH'],
      ['T1:1', MISMATCHED, 'ALREADY_SETTLED'],
    ]);
    expect(response.mismatchedCount).to.equal(6);
    expect(response.matchedTotal).to.deep.equal(money(0));
    expect((await stateOf('T1:2')).state).to.equal(TapState.TAP_STATE_DEDUCTED);
    expect((await stateOf('T1:1')).settlementId).to.equal('S1');
    const mismatches = await t.db('settlement_items').where({ status: 'MISMATCHED' }).orderBy('position').select('settlement_id', 'tap_id', 'reason');
    expect(mismatches).to.have.length(6);
    expect(mismatches[0]).to.deep.equal({ settlement_id: 'S2', tap_id: 'T1:9', reason: 'UNKNOWN_TAP' });
  });

  it('asks for the settlement again (UNAVAILABLE DEBIT_OUTCOME_PENDING) while a tap awaits its debit answer, then matches it', async () => {
    // The authorizer debited T1:5 and settles it before the issuer stored the answer (in flight, or lost with a crash).
    await t.db('taps').where({ tap_id: 'T1:5' }).update({ state: 'DEDUCTING' });
    const counts = await tableCounts(t.db);
    const request = batch('S1', [item('T1:1'), item('T1:5')]);
    const err = await expectApiError(settle(t.ctx, request), status.UNAVAILABLE, 'DEBIT_OUTCOME_PENDING');
    expect(err.metadata).to.include({ settlement_id: 'S1', tap_ids: 'T1:5' });
    expect(await tableCounts(t.db)).to.deep.equal(counts);
    expect((await stateOf('T1:1')).state).to.equal(TapState.TAP_STATE_DEDUCTED);

    await deductStep(t.ctx); // the issuer asks again with the same id and stores the answer
    const response = await settle(t.ctx, request);
    expect(response.results.map((r) => r.status)).to.deep.equal([MATCHED, MATCHED]);
    expect((await stateOf('T1:5')).state).to.equal(TapState.TAP_STATE_SETTLED);
  });

  it('answers a repeated settlement with the stored response and changes nothing', async () => {
    const request = batch('S1', [item('T1:1'), item('T1:9')]);
    const first = await settle(t.ctx, request);
    const counts = await tableCounts(t.db);
    expect(await settle(t.ctx, request)).to.deep.equal(first);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  it('refuses the same settlement id with another payload (REQUEST_ID_REUSED)', async () => {
    await settle(t.ctx, batch('S1', [item('T1:1')]));
    await expectApiError(settle(t.ctx, batch('S1', [item('T1:2')])), status.ALREADY_EXISTS, 'REQUEST_ID_REUSED');
  });

  it('refuses a total that is not the sum of the items (TOTAL_MISMATCH) and stores nothing', async () => {
    const counts = await tableCounts(t.db);
    const wrongSum = { ...batch('S1', [item('T1:1'), item('T1:2')]), total: money(399) };
    const err = await expectApiError(settle(t.ctx, wrongSum), status.INVALID_ARGUMENT, 'TOTAL_MISMATCH');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['total']);
    const wrongCurrency = { ...batch('S1', [item('T1:1')]), total: money(200, 'USD') };
    await expectApiError(settle(t.ctx, wrongCurrency), status.INVALID_ARGUMENT, 'TOTAL_MISMATCH');
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  it('names every bad field in one INVALID_ARGUMENT', async () => {
    const bad: SettleRequest = {
      settlementId: '',
      authorizerId: '',
      items: [item('T1:1', 0n), { ...item('T1:1'), deductionId: '' }, { ...item('T1:2'), amount: undefined }],
      total: undefined,
    };
    const err = await expectApiError(settle(t.ctx, bad), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.have.members([
      'settlement_id',
      'authorizer_id',
      'items[0].amount.minor_units',
      'items[1].deduction_id',
      'items[1].tap_id',
      'items[2].amount',
      'total',
    ]);
    const empty = await expectApiError(settle(t.ctx, { ...batch('S1', []) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(empty.fieldViolations.map((v) => v.field)).to.deep.equal(['items']);
  });
});
