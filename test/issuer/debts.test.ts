// Debt recovery in the domain, against the fake authorizer: a declined debit
// lists the card DEBT; retries go out on the backoff schedule (the issuer's
// clock is moved by the test) under new request ids naming the tap; an
// attempt is stored before it is sent, so a failed call resends the same id;
// a recovered debt turns the tap DEDUCTED and unlists the card once it owes
// nothing.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { DeductDeclineReason, DeductStatus } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { getCard, listCardTaps } from '../../issuer/cards.js';
import { debtStep, outstandingDebt, retryDebts, retryRequestId } from '../../issuer/debts.js';
import { deductStep } from '../../issuer/deductions.js';
import { cardReasons, changesAfter } from '../../issuer/deny-list.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { settle } from '../../issuer/settlement.js';
import { reportTaps } from '../../issuer/taps.js';
import { FakeAuthorizer, authorizerDown, declineWith, enrollRequest, expectApiError, money, newCard, openTestIssuer, tapsOf, type TestIssuer } from './fixtures.js';

const BASE = 1_000;
const { TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DECLINED, TAP_STATE_DEDUCTED } = TapState;

describe('issuer: debt recovery', () => {
  let t: TestIssuer;
  let clock: number;
  let agreementId: string;
  const held = async () => (await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 500, pageToken: '' })).taps.reverse();
  const insufficient = declineWith(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS);
  const approveAll = new FakeAuthorizer().decide;

  beforeEach(async () => {
    t = await openTestIssuer();
    clock = Date.parse('2030-03-10T02:00:00Z');
    t.ctx.now = () => new Date(clock);
    t.ctx.debtRetry = { baseMs: BASE, maxMs: 4 * BASE };
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    await reportTaps(t.ctx, { terminalId: 'T1', taps: tapsOf(enrolled.card, agreementId, 'T1', 1, 2).taps });
    t.authorizer.decide = insufficient;
    await deductStep(t.ctx);
  });
  afterEach(() => t.close());

  it('lists the card DEBT when a debit is declined, and schedules the retry', async () => {
    const h = await held();
    expect(h.map((x) => [x.state, x.declineReason, x.nextRetryAt?.getTime()])).to.deep.equal([
      [TAP_STATE_DECLINED, 'INSUFFICIENT_FUNDS', clock + BASE],
      [TAP_STATE_DECLINED, 'INSUFFICIENT_FUNDS', clock + BASE],
    ]);
    expect(await cardReasons(t.db, 'C1')).to.deep.equal(['DEBT']);
    expect((await changesAfter(t.db, 0n, 10)).length, 'listed once for two debts').to.equal(1);
    expect(await outstandingDebt(t.db, 'C1')).to.equal(400n);
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.outstandingDebt).to.deep.equal(money(400));
  });

  it('retries only when due, under a new request id per attempt that names the tap, backing off up to the maximum', async () => {
    expect((await debtStep(t.ctx)).retried, 'not due yet').to.equal(0);
    clock += BASE;
    expect((await debtStep(t.ctx)).retried).to.equal(2);
    const retry = t.authorizer.deductCalls[1].items[0];
    expect([retry.requestId, retry.tapId, retry.agreementId, retry.amount]).to.deep.equal(['T1:1:r1', 'T1:1', agreementId, money(200)]);
    expect((await held())[0]).to.deep.include({ state: TAP_STATE_DECLINED, debtRetries: 1, nextRetryAt: new Date(clock + 2 * BASE) });

    clock += 2 * BASE;
    await debtStep(t.ctx);
    clock += 4 * BASE;
    await debtStep(t.ctx);
    expect((await held())[0]).to.deep.include({ debtRetries: 3, nextRetryAt: new Date(clock + 4 * BASE) }); // capped
    expect(t.authorizer.deductCalls.slice(1).map((c) => c.items[0].requestId)).to.deep.equal(['T1:1:r1', 'T1:1:r2', 'T1:1:r3']);
  });

  it('recovers the debts: DECLINED -> DEDUCTED (recovered), and unlists the card once both are paid', async () => {
    clock += BASE;
    t.authorizer.decide = (item) => (item.tapId === 'T1:1' ? approveAll(item) : insufficient());
    expect(await debtStep(t.ctx)).to.deep.include({ retried: 2, recovered: 1 });
    let h = await held();
    expect(h.map((x) => [x.state, x.recovered, x.deductionId])).to.deep.equal([
      [TAP_STATE_DEDUCTED, true, 'ded-T1:1:r1'],
      [TAP_STATE_DECLINED, false, ''],
    ]);
    expect(h[0].charged).to.deep.equal(money(200));
    expect(h[0].nextRetryAt).to.equal(undefined);
    expect(h[0].history.map((x) => x.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DECLINED, TAP_STATE_DEDUCTED]);
    expect(await cardReasons(t.db, 'C1'), 'still owes one fare').to.deep.equal(['DEBT']);

    t.authorizer.decide = approveAll;
    const response = await retryDebts(t.ctx, { cardId: 'C1' }); // the rider, without waiting for the schedule
    expect([response.retriedCount, response.recoveredCount, response.outstandingDebt]).to.deep.equal([1, 1, money(0)]);
    expect(response.denyListEntry!.reasons).to.deep.equal([]);
    h = await held();
    expect(h.map((x) => x.state)).to.deep.equal([TAP_STATE_DEDUCTED, TAP_STATE_DEDUCTED]);
    expect((await changesAfter(t.db, 0n, 10)).map((c) => [c.action, c.reasons])).to.deep.equal([
      [1, [1]],
      [2, []],
    ]);
  });

  it('resends a PENDING attempt under the same request id after a failed call, and never starts a second one', async () => {
    clock += BASE;
    t.authorizer.failWith = authorizerDown();
    let failure: unknown;
    await debtStep(t.ctx).catch((err) => (failure = err));
    expect(failure).to.exist;
    expect(await t.db('debit_attempts').orderBy('request_id').select('request_id', 'state')).to.deep.equal([
      { request_id: 'T1:1:r1', state: 'PENDING' },
      { request_id: 'T1:2:r1', state: 'PENDING' },
    ]);

    t.authorizer.failWith = undefined;
    t.authorizer.decide = approveAll;
    clock += 100 * BASE;
    expect(await debtStep(t.ctx)).to.deep.include({ retried: 2, recovered: 2 });
    expect(t.authorizer.sentCounts().get('T1:1:r1')).to.equal(2);
    expect(t.authorizer.sentCounts().has('T1:1:r2')).to.equal(false);
    expect(await cardReasons(t.db, 'C1')).to.deep.equal([]);
    expect((await debtStep(t.ctx)).retried, 'nothing left').to.equal(0);
  });

  it('has a settlement wait while a retried debit is unanswered, then settles the recovered tap under its tap id', async () => {
    clock += BASE;
    t.authorizer.decide = approveAll;
    t.authorizer.failWith = authorizerDown(); // the debit may have happened; its answer is lost
    await debtStep(t.ctx).catch(() => undefined);
    const item = { deductionId: 'ded-T1:1:r1', tapId: 'T1:1', amount: money(200) };
    const request = { settlementId: 'stl-1', authorizerId: 'authorizer-1', items: [item], total: money(200) };
    await expectApiError(settle(t.ctx, request), status.UNAVAILABLE, 'DEBIT_OUTCOME_PENDING');

    t.authorizer.failWith = undefined;
    await debtStep(t.ctx);
    const response = await settle(t.ctx, request);
    expect(response.mismatchedCount).to.equal(0);
    expect((await held())[0]).to.deep.include({ state: TapState.TAP_STATE_SETTLED, recovered: true, settlementId: 'stl-1' });
  });

  it('stops retrying a debt the authorizer refuses for good: UNCOLLECTABLE, still owed and listed, collectable again by RetryDebts', async () => {
    clock += BASE;
    t.authorizer.decide = (item) =>
      item.tapId === 'T1:1'
        ? { status: DeductStatus.DEDUCT_STATUS_REJECTED, deductionId: '', declineReason: 0, errorReason: 'AGREEMENT_NOT_FOUND', message: '' }
        : insufficient();
    expect(await debtStep(t.ctx)).to.deep.include({ retried: 2, recovered: 0 });
    let h = await held();
    expect(h.map((x) => [x.state, x.declineReason, x.nextRetryAt])).to.deep.equal([
      [TapState.TAP_STATE_UNCOLLECTABLE, 'AGREEMENT_NOT_FOUND', undefined],
      [TAP_STATE_DECLINED, 'INSUFFICIENT_FUNDS', new Date(clock + 2 * BASE)],
    ]);
    expect(await outstandingDebt(t.db, 'C1'), 'still owed').to.equal(400n);
    expect(await cardReasons(t.db, 'C1')).to.deep.equal(['DEBT']);

    // The schedule no longer sends it, however long it waits.
    const sent = () => t.authorizer.deductCalls.flatMap((c) => c.items.map((i) => i.tapId));
    const before = sent().length;
    clock += 1000 * BASE;
    await debtStep(t.ctx);
    expect(sent().slice(before)).to.deep.equal(['T1:2']);

    // The rider re-enrolled to an account that pays: asking for a retry collects it.
    t.authorizer.decide = approveAll;
    const response = await retryDebts(t.ctx, { cardId: 'C1' });
    expect([response.recoveredCount, response.outstandingDebt]).to.deep.equal([2, money(0)]);
    h = await held();
    expect(h[0].history.map((x) => x.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DECLINED, TapState.TAP_STATE_UNCOLLECTABLE, TAP_STATE_DEDUCTED]);
    expect(await cardReasons(t.db, 'C1')).to.deep.equal([]);
  });

  it('keeps request ids within 64 characters for long tap ids', () => {
    expect(retryRequestId('T1:7', 2)).to.equal('T1:7:r2');
    const long = `${'T'.repeat(60)}:12345`;
    expect(retryRequestId(long, 2)).to.match(/^r2:[0-9a-f]{48}$/);
    expect(retryRequestId(long, 2)).to.not.equal(retryRequestId(long, 3));
  });

  it('refuses RetryDebts for a bad or unknown card', async () => {
    await expectApiError(retryDebts(t.ctx, { cardId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    await expectApiError(retryDebts(t.ctx, { cardId: 'C404' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
  });
});
