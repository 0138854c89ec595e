import { expect } from 'chai';
import { DeductDeclineReason, DeductStatus } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { listCardTaps } from '../../issuer/cards.js';
import { deductStep } from '../../issuer/deductions.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { reportTaps } from '../../issuer/taps.js';
import { captureLogs } from '../helpers/logs.js';
import { authorizerDown, declineWith, enrollRequest, ISSUER_ID, money, newCard, openTestIssuer, tapsOf, type TestIssuer } from './fixtures.js';

const { TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTED, TAP_STATE_DECLINED, TAP_STATE_REJECTED } = TapState;

describe('issuer: debit outbox (Deduct)', () => {
  let t: TestIssuer;
  let agreementId: string;
  const held = async () => (await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 500, pageToken: '' })).taps.reverse();

  async function report(count: number, first = 1) {
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    await reportTaps(t.ctx, { terminalId: 'T1', taps: tapsOf(enrolled.card, agreementId, 'T1', first, count).taps });
  }

  beforeEach(async () => (t = await openTestIssuer()));
  afterEach(() => t.close());

  it('sends RECEIVED taps oldest first with the tap id as request id and stores DEDUCTED with the deduction id', async () => {
    await report(3);
    expect(await deductStep(t.ctx)).to.equal(false); // less than a full batch: nothing more waiting
    expect(t.authorizer.deductCalls).to.have.length(1);
    const call = t.authorizer.deductCalls[0];
    expect(call.issuerId).to.equal(ISSUER_ID);
    expect(call.items.map((i) => i.requestId)).to.deep.equal(['T1:1', 'T1:2', 'T1:3']);
    expect(call.items[0]).to.deep.include({ agreementId, amount: money(200) });

    const taps = await held();
    expect(taps.map((h) => [h.state, h.deductionId])).to.deep.equal([
      [TAP_STATE_DEDUCTED, 'ded-T1:1'],
      [TAP_STATE_DEDUCTED, 'ded-T1:2'],
      [TAP_STATE_DEDUCTED, 'ded-T1:3'],
    ]);
    expect(taps[0].charged).to.deep.equal(money(200));
    expect(taps[0].history.map((h) => h.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTED]);
    expect(await deductStep(t.ctx)).to.equal(false);
    expect(t.authorizer.deductCalls).to.have.length(1); // nothing left to send
  });

  it('drains in batches of the configured size', async () => {
    await report(5);
    expect(await deductStep(t.ctx, 2)).to.equal(true);
    expect(await deductStep(t.ctx, 2)).to.equal(true);
    expect(await deductStep(t.ctx, 2)).to.equal(false);
    expect(t.authorizer.deductCalls.map((c) => c.items.length)).to.deep.equal([2, 2, 1]);
  });

  it('lets several workers drain at once: disjoint batches, each tap sent and stored once', async () => {
    await report(7);
    // Three workers of one issuer (deductConcurrency 3) step at the same moment.
    await Promise.all([deductStep(t.ctx, 3), deductStep(t.ctx, 3), deductStep(t.ctx, 3)]);
    const sent = t.authorizer.deductCalls.flatMap((c) => c.items.map((i) => i.requestId));
    expect([...sent].sort()).to.deep.equal(['T1:1', 'T1:2', 'T1:3', 'T1:4', 'T1:5', 'T1:6', 'T1:7']);
    const taps = await held();
    expect(taps.map((h) => h.state)).to.deep.equal(new Array(7).fill(TAP_STATE_DEDUCTED));
    for (const h of taps) expect(h.history.map((c) => c.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTED]);
  });

  it('stores and counts an answer once when another sender already stored it', async () => {
    await report(2);
    const logs = captureLogs();
    t.ctx.log = logs.log;
    // While the call is out, another replica (whose claim had expired) stores T1:1's answer.
    const deduct = t.authorizer.deduct.bind(t.authorizer);
    t.authorizer.deduct = async (request) => {
      const response = await deduct(request);
      await t.db('taps').where({ tap_id: 'T1:1' }).update({ state: 'DEDUCTED', deduction_id: 'ded-T1:1' });
      return response;
    };
    await deductStep(t.ctx);
    const answered = logs.lines().filter((l) => l.msg === 'tap debit answered');
    expect(answered.map((l) => l.tapId)).to.deep.equal(['T1:2']);
    expect(logs.lines().filter((l) => l.msg === 'deduct batch stored').map((l) => l.debited)).to.deep.equal([1]);
    expect((await t.db('tap_state_changes').where({ state: 'DEDUCTED' }).select('tap_id')).map((r) => r.tap_id)).to.deep.equal(['T1:2']);
  });

  it('stores a decline as DECLINED with the reason name, and an authorizer rejection as REJECTED with its reason', async () => {
    await report(2);
    t.authorizer.decide = (item) =>
      item.requestId === 'T1:1'
        ? declineWith(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS)()
        : { status: DeductStatus.DEDUCT_STATUS_REJECTED, deductionId: '', declineReason: 0, errorReason: 'AGREEMENT_NOT_FOUND', message: '' };
    await deductStep(t.ctx);
    const taps = await held();
    expect(taps.map((h) => [h.state, h.declineReason, h.charged])).to.deep.equal([
      [TAP_STATE_DECLINED, 'INSUFFICIENT_FUNDS', undefined],
      [TAP_STATE_REJECTED, 'AGREEMENT_NOT_FOUND', undefined],
    ]);
  });

  it('keeps taps DEDUCTING when the call fails and resends them with the same request ids', async () => {
    await report(2);
    t.authorizer.failWith = authorizerDown();
    let failure: unknown;
    await deductStep(t.ctx).catch((err) => (failure = err));
    expect(failure).to.exist;
    expect((await held()).map((h) => h.state)).to.deep.equal([TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTING]);

    t.authorizer.failWith = undefined;
    await deductStep(t.ctx);
    expect((await held()).map((h) => h.state)).to.deep.equal([TAP_STATE_DEDUCTED, TAP_STATE_DEDUCTED]);
    expect([...t.authorizer.sentCounts()]).to.deep.equal([
      ['T1:1', 2],
      ['T1:2', 2],
    ]);
    // DEDUCTING was entered once, however often the tap was sent.
    expect((await held())[0].history.map((h) => h.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTED]);
  });

  it('recovers taps a crash left DEDUCTING after they were sent', async () => {
    await report(1);
    // A crash between the send and the storing of the answer: the authorizer debited, the issuer does not know.
    await t.authorizer.deduct({ issuerId: ISSUER_ID, items: [{ requestId: 'T1:1', agreementId, amount: money(200), tappedAt: new Date() }] });
    await t.db('taps').update({ state: 'DEDUCTING' });
    await deductStep(t.ctx);
    const [tap] = await held();
    expect([tap.state, tap.deductionId]).to.deep.equal([TAP_STATE_DEDUCTED, 'ded-T1:1']);
  });

  it('stores nothing from an answer that does not match the items', async () => {
    await report(2);
    t.authorizer.deduct = async (req) => ({ results: [{ requestId: req.items[0].requestId, status: DeductStatus.DEDUCT_STATUS_DEBITED, deductionId: 'd', declineReason: 0, errorReason: '', message: '' }] });
    let failure: unknown;
    await deductStep(t.ctx).catch((err) => (failure = err));
    expect(String(failure)).to.contain('1 results for 2 items');
    expect((await held()).map((h) => h.state)).to.deep.equal([TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTING]);
  });
});
