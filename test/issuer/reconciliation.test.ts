import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { DeductDeclineReason, DeductStatus } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { TapState, type SettleRequest } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { deductStep } from '../../issuer/deductions.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { reconciliationReport } from '../../issuer/reconciliation.js';
import { serviceDay, serviceDayRange, UTC_DAYS } from '../../issuer/service-day.js';
import { settle } from '../../issuer/settlement.js';
import { reportTaps } from '../../issuer/taps.js';
import { CURRENCY, declineWith, enrollRequest, expectApiError, money, newCard, openTestIssuer, tableCounts, tapsOf, type TestIssuer } from './fixtures.js';

const DAY = '2030-05-17';
const item = (tapId: string, amount = 200n, deductionId = `ded-${tapId}`) => ({ deductionId, tapId, amount: money(amount) });
const batch = (settlementId: string, items: ReturnType<typeof item>[]): SettleRequest => ({
  settlementId,
  authorizerId: 'authorizer-1',
  items,
  total: money(items.reduce((s, i) => s + BigInt(i.amount.minorUnits), 0n)),
});

describe('issuer: reconciliation report', () => {
  let t: TestIssuer;
  const report = (serviceDay = DAY, pageSize = 0, pageToken = '') => reconciliationReport(t.db, { serviceDay, pageSize, pageToken }, { currencyCode: CURRENCY });

  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    // Five taps on DAY (T1:1..5) and one the next day (T1:6); T1:4 declined, T1:5 never debited.
    const { taps } = tapsOf(enrolled.card, agreementId, 'T1', 1, 6);
    const { start } = serviceDayRange(DAY, UTC_DAYS);
    taps.forEach((tap, i) => (tap.tappedAt = new Date(start + (i === 5 ? 86_400_000 : 3_600_000 * (i + 1)))));
    t.authorizer.decide = (i) =>
      i.requestId === 'T1:4'
        ? declineWith(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS)()
        : { status: DeductStatus.DEDUCT_STATUS_DEBITED, deductionId: `ded-${i.requestId}`, declineReason: 0, errorReason: '', message: '' };
    await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(0, 4) });
    await deductStep(t.ctx);
    await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(4) });
    await t.db('taps').where({ tap_id: 'T1:6' }).update({ state: 'DEDUCTED', deduction_id: 'ded-T1:6', charged_currency: CURRENCY, charged_minor: '200' });
    // T1:1 settled; T1:2 settled with a wrong amount; a tap the issuer never saw; T1:3 left unsettled.
    await settle(t.ctx, batch('S1', [item('T1:1'), item('T1:2', 150n), item('T9:1')]));
  });
  afterEach(() => t.close());

  it('counts and sums the day\'s taps by state, and debited against settled', async () => {
    const r = await report();
    expect(r.serviceDay).to.equal(DAY);
    expect([r.dayStart!.toISOString(), r.dayEnd!.toISOString()]).to.deep.equal([`${DAY}T00:00:00.000Z`, '2030-05-18T00:00:00.000Z']);
    expect(r.states.map((s) => [s.state, s.tapCount, s.fares!.minorUnits, s.charged!.minorUnits])).to.deep.equal([
      [TapState.TAP_STATE_RECEIVED, '1', '200', '0'],
      [TapState.TAP_STATE_DEDUCTED, '2', '400', '400'],
      [TapState.TAP_STATE_DECLINED, '1', '200', '0'],
      [TapState.TAP_STATE_SETTLED, '1', '200', '200'],
    ]);
    expect(r.tapCount).to.equal('5');
    expect([r.debitedCount, r.debited, r.settledCount, r.settled, r.unsettled]).to.deep.equal(['3', money(600), '1', money(200), money(400)]);
  });

  it('lists every mismatch of the day as stored by Settle, and an unknown tap on the day its settlement arrived', async () => {
    const r = await report();
    expect(r.mismatchCount).to.equal('1');
    expect(r.mismatches.map((m) => [m.settlementId, m.position, m.tapId, m.deductionId, m.amount, m.reason])).to.deep.equal([
      ['S1', 1, 'T1:2', 'ded-T1:2', money(150), 'AMOUNT_MISMATCH'],
    ]);
    const today = new Date().toISOString().slice(0, 10);
    const received = await report(today);
    expect(received.mismatches.map((m) => [m.tapId, m.reason])).to.deep.equal([['T9:1', 'UNKNOWN_TAP']]);
    expect(received.mismatches[0].receivedAt!.getTime()).to.be.closeTo(Date.now(), 60_000);
  });

  it('pages the mismatches; totals stay on every page', async () => {
    await settle(t.ctx, batch('S2', [item('T1:3', 200n, 'ded-other'), item('T1:4'), item('T1:1')]));
    const first = await report(DAY, 2);
    expect(first.mismatchCount).to.equal('4');
    expect(first.mismatches.map((m) => [m.tapId, m.reason])).to.deep.equal([
      ['T1:2', 'AMOUNT_MISMATCH'],
      ['T1:3', 'DEDUCTION_ID_MISMATCH'],
    ]);
    const second = await report(DAY, 2, first.nextPageToken);
    expect(second.mismatches.map((m) => [m.tapId, m.reason])).to.deep.equal([
      ['T1:4', 'TAP_NOT_DEDUCTED'],
      ['T1:1', 'ALREADY_SETTLED'],
    ]);
    expect(second.nextPageToken).to.equal('');
    expect(second.debited).to.deep.equal(first.debited);
  });

  it('takes a service-day boundary: a day starting at 04:00 UTC+8 begins at 20:00 UTC the day before', () => {
    const { start, end } = serviceDayRange(DAY, { dayStartMinutes: 4 * 60, utcOffsetMinutes: 8 * 60 });
    expect([new Date(start).toISOString(), new Date(end).toISOString()]).to.deep.equal(['2030-05-16T20:00:00.000Z', '2030-05-17T20:00:00.000Z']);
  });

  it("agrees with the issuer's service day (fares.ts) for any boundary and offset", () => {
    for (const cfg of [
      { dayStartMinutes: 240, utcOffsetMinutes: 480 },
      { dayStartMinutes: 0, utcOffsetMinutes: 0 },
      { dayStartMinutes: 180, utcOffsetMinutes: -300 },
    ]) {
      for (let t = Date.parse('2030-05-16T00:00:00Z'); t < Date.parse('2030-05-19T00:00:00Z'); t += 37 * 60_000) {
        const { start, end } = serviceDayRange(serviceDay(t, cfg), cfg);
        expect(start <= t && t < end, `${new Date(t).toISOString()} in ${serviceDay(t, cfg)}`).to.equal(true);
      }
    }
  });

  it('reports an empty day with zero totals', async () => {
    const r = await report('2030-01-01');
    expect([r.states, r.tapCount, r.debited, r.settled, r.unsettled, r.mismatchCount, r.mismatches]).to.deep.equal([[], '0', money(0), money(0), money(0), '0', []]);
  });

  it('refuses a bad day, page size or token, and changes nothing', async () => {
    await settle(t.ctx, batch('S2', [item('T1:1')]));
    const counts = await tableCounts(t.db);
    const err = await expectApiError(reconciliationReport(t.db, { serviceDay: '2030-02-30', pageSize: -1, pageToken: '' }, { currencyCode: CURRENCY }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['service_day', 'page_size']);
    const otherDay = (await report(DAY, 1)).nextPageToken;
    expect(otherDay).to.not.equal('');
    await expectApiError(report('2030-05-18', 1, otherDay), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    await expectApiError(report(DAY, 1, 'not-a-token'), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });
});
