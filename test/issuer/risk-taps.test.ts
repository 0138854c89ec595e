// What TapReport decides besides storing: the amount due under the daily cap
// (arrival order, service-day boundary, CAPPED taps) and clone detection from
// the card counter (repeats and counters going back in time, not mere
// out-of-order arrival).
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import type { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import { getCard, listCardTaps } from '../../issuer/cards.js';
import { deductStep } from '../../issuer/deductions.js';
import { cardReasons } from '../../issuer/deny-list.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { amountDue } from '../../issuer/fares.js';
import { parseClockTime, parseUtcOffset, serviceDay } from '../../issuer/service-day.js';
import { clockFlag, cloneEvidence, sameRide, type RideTap } from '../../issuer/tap-risk.js';
import { reportTaps } from '../../issuer/taps.js';
import { backends, testDatabases, type TestDatabases } from '../helpers/databases.js';
import { enrollRequest, expectApiError, money, newCard, openTestIssuer, tapOf, type TestIssuer } from './fixtures.js';

const MINUTE = 60_000;
const T0 = Date.parse('2030-03-10T02:00:00Z'); // 10:00 at UTC+8

describe('fares: service day and cap arithmetic', () => {
  const cfg = { dayStartMinutes: 240, utcOffsetMinutes: 480 }; // 04:00 at UTC+8

  it('puts a ride before the boundary on the previous service day', () => {
    expect(serviceDay(Date.parse('2030-03-10T19:59:00Z'), cfg)).to.equal('2030-03-10'); // 03:59 local on the 11th
    expect(serviceDay(Date.parse('2030-03-10T20:00:00Z'), cfg)).to.equal('2030-03-11'); // 04:00 local
    expect(serviceDay(Date.parse('2030-03-10T15:59:00Z'), cfg)).to.equal('2030-03-10'); // 23:59 local
    expect(serviceDay(Date.parse('2030-03-10T12:00:00Z'), { dayStartMinutes: 0, utcOffsetMinutes: 0 })).to.equal('2030-03-10');
  });

  it('reduces a fare to what is left under the cap, never below zero', () => {
    expect(amountDue(200n, 0n, 500n)).to.equal(200n);
    expect(amountDue(200n, 400n, 500n)).to.equal(100n);
    expect(amountDue(200n, 500n, 500n)).to.equal(0n);
    expect(amountDue(200n, 700n, 500n)).to.equal(0n);
    expect(amountDue(200n, 10_000n, undefined)).to.equal(200n);
  });

  it('parses the boundary and the offset', () => {
    expect(parseClockTime('04:00')).to.equal(240);
    expect(parseUtcOffset('+08:00')).to.equal(480);
    expect(parseUtcOffset('-03:30')).to.equal(-210);
    expect(parseUtcOffset('Z')).to.equal(0);
    expect(() => parseClockTime('24:00')).to.throw(/HH:MM/);
    expect(() => parseUtcOffset('8')).to.throw(/UTC offset/);
  });
});

describe('clone evidence between two taps of a card', () => {
  const skew = MINUTE;
  const at = (tapId: string, counter: bigint, tappedAt: number) => ({ tapId, counter, tappedAt });

  it('is a repeated counter, or a later tap with a lower counter beyond the clock tolerance', () => {
    expect(cloneEvidence(at('a', 5n, T0), at('b', 5n, T0 + 60 * MINUTE), skew)).to.equal('COUNTER_REPEATED');
    expect(cloneEvidence(at('a', 9n, T0), at('b', 4n, T0 + 60 * MINUTE), skew)).to.equal('COUNTER_WENT_BACK');
    expect(cloneEvidence(at('b', 4n, T0 + 60 * MINUTE), at('a', 9n, T0), skew)).to.equal('COUNTER_WENT_BACK');
  });

  it('is not a lower counter that arrives late, nor an inversion within the tolerance, nor the tap itself', () => {
    expect(cloneEvidence(at('a', 4n, T0), at('b', 9n, T0 + 60 * MINUTE), skew)).to.equal(undefined);
    expect(cloneEvidence(at('a', 9n, T0), at('b', 4n, T0 + 30_000), skew)).to.equal(undefined);
    expect(cloneEvidence(at('a', 5n, T0), at('a', 5n, T0), skew)).to.equal(undefined);
  });
});

describe('a terminal clock that jumps: which tap times are implausible', () => {
  const skew = MINUTE;
  const card = { lastCounter: 10n, lastTappedAt: T0 };

  it('flags a tap stamped after the issuer received it (a clock forward) beyond the tolerance', () => {
    expect(clockFlag({ tappedAt: T0 + 24 * 60 * MINUTE, counter: 11n }, T0 + MINUTE, card, skew)).to.equal('CLOCK_AHEAD');
    expect(clockFlag({ tappedAt: T0 + 6 * MINUTE, counter: 11n }, T0, card, skew)).to.equal('CLOCK_AHEAD');
    expect(clockFlag({ tappedAt: T0 + 4 * MINUTE, counter: 11n }, T0, card, skew)).to.equal(undefined);
  });

  it('flags a newer tap (higher counter) stamped before the card\'s latest beyond the skew (a clock back)', () => {
    expect(clockFlag({ tappedAt: T0 - 60 * MINUTE, counter: 11n }, T0 + MINUTE, card, skew)).to.equal('CLOCK_BEHIND');
    expect(clockFlag({ tappedAt: T0 - 30_000, counter: 11n }, T0 + MINUTE, card, skew)).to.equal(undefined);
  });

  it('does not flag an older tap that arrives late (lower counter, earlier time), nor a card\'s first tap', () => {
    expect(clockFlag({ tappedAt: T0 - 60 * MINUTE, counter: 9n }, T0 + MINUTE, card, skew)).to.equal(undefined);
    expect(clockFlag({ tappedAt: T0 - 60 * MINUTE, counter: 11n }, T0 + MINUTE, { lastCounter: 10n, lastTappedAt: undefined }, skew)).to.equal(undefined);
  });

  it('a flagged time proves no order for the clone check; a repeated counter still does', () => {
    const a = { tapId: 'a', counter: 9n, tappedAt: T0 };
    const b = { tapId: 'b', counter: 4n, tappedAt: T0 + 60 * MINUTE };
    expect(cloneEvidence(a, b, skew)).to.equal('COUNTER_WENT_BACK');
    expect(cloneEvidence({ ...a, clockFlag: 'CLOCK_BEHIND' as const }, b, skew)).to.equal(undefined);
    expect(cloneEvidence(a, { ...b, clockFlag: 'CLOCK_AHEAD' as const }, skew)).to.equal(undefined);
    expect(cloneEvidence({ ...a, counter: 4n, clockFlag: 'CLOCK_AHEAD' as const }, b, skew)).to.equal('COUNTER_REPEATED');
  });
});

describe('the same ride presented twice (repeat rule)', () => {
  const ride = (tapId: string, counter: bigint, tappedAt: number, more: Partial<RideTap> = {}): RideTap => ({
    tapId,
    terminalId: 'T1',
    counter,
    tappedAt,
    lastCompletedCounter: counter - 1n,
    ...more,
  });

  it('pairs a later tap whose card record shows the earlier one never completed, at the same terminal or line, within the window', () => {
    const torn = ride('T1:1', 5n, T0, { lastCompletedCounter: 4n });
    expect(sameRide(torn, ride('T1:2', 6n, T0 + 20_000, { lastCompletedCounter: 4n }), MINUTE)).to.equal(true);
    expect(sameRide(torn, ride('T1:2', 6n, T0 + MINUTE, { lastCompletedCounter: 0n }), MINUTE)).to.equal(true);
    const onLine = { ...torn, lineId: 'M1' };
    expect(sameRide(onLine, ride('T2:1', 6n, T0 + 20_000, { terminalId: 'T2', lineId: 'M1', lastCompletedCounter: 4n }), MINUTE)).to.equal(true);
  });

  it('does not pair a completed tap, another place, a tap outside the window, a repeat, or a tap without the card record', () => {
    const torn = ride('T1:1', 5n, T0, { lastCompletedCounter: 4n });
    expect(sameRide(torn, ride('T1:2', 6n, T0 + 20_000, { lastCompletedCounter: 5n }), MINUTE), 'record shows it completed').to.equal(false);
    expect(sameRide(torn, ride('T2:1', 6n, T0 + 20_000, { terminalId: 'T2', lastCompletedCounter: 4n }), MINUTE), 'another terminal, no line').to.equal(false);
    expect(sameRide(torn, ride('T1:2', 6n, T0 + MINUTE + 1, { lastCompletedCounter: 4n }), MINUTE), 'outside the window').to.equal(false);
    expect(sameRide(torn, ride('T1:2', 6n, T0 + 20_000, { lastCompletedCounter: 4n, repeatOf: 'T1:1' }), MINUTE), 'already a repeat').to.equal(false);
    expect(sameRide(torn, ride('T1:2', 6n, T0 + 20_000, { lastCompletedCounter: undefined }), MINUTE), 'no record reported').to.equal(false);
    expect(sameRide(ride('T1:2', 6n, T0 + 20_000, { lastCompletedCounter: 4n }), torn, MINUTE), 'order').to.equal(false);
  });
});

describe('issuer: TapReport risk decisions', () => {
  let t: TestIssuer;
  let card: CardImage;
  let agreementId: string;

  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    card = enrolled.card;
    // The issuer's clock: after every tap of these tests, so none is stamped in its future.
    t.ctx.now = () => new Date(Date.parse('2030-03-11T00:00:00Z'));
  });
  afterEach(() => t.close());

  /** The card's next tap at a terminal, taken at a given time. */
  function next(terminalId: string, sequence: number, tappedAt: number, fare = 200n, from = card): Tap {
    const made = tapOf(from, agreementId, terminalId, sequence, fare);
    if (from === card) card = made.card;
    return { ...made.tap, tappedAt: new Date(tappedAt) };
  }
  const held = async () => (await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 500, pageToken: '' })).taps.reverse();

  it('stores the line a tap was taken on, and refuses a malformed line id', async () => {
    const onLine = { ...next('T1', 1, T0), lineId: 'M1' };
    await reportTaps(t.ctx, { terminalId: 'T1', taps: [onLine] });
    expect((await held())[0].tap).to.deep.equal(onLine);
    const err = await expectApiError(reportTaps(t.ctx, { terminalId: 'T1', taps: [{ ...next('T1', 2, T0), lineId: 'M 1' }] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['taps[0].line_id']);
  });

  for (const backend of backends()) describe(`a repeated presentation: one ride charged (${backend})`, () => {
    // On PostgreSQL too when configured: the rule's queries compare counters in SQL.
    let databases: TestDatabases | undefined;
    beforeEach(async function () {
      if (backend === 'sqlite') return;
      await t.close();
      databases = testDatabases(backend, '');
      t = await openTestIssuer(await databases.url('issuer'));
      const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
      agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
      card = enrolled.card;
    });
    afterEach(async () => {
      if (databases) {
        await t.close();
        await databases.drop();
        databases = undefined;
        t = await openTestIssuer(); // the outer afterEach closes it
      }
    });
    const record = (tap: Tap) => ({ tapId: tap.tapId, counter: tap.proof!.counter });
    const none = { tapId: '', counter: '0' };
    const debitedIds = async () => {
      await deductStep(t.ctx);
      return t.authorizer.deductCalls.flatMap((c) => c.items.map((i) => i.requestId));
    };

    it("stores the terminal's repeat REPEATED with its link, nothing due, never debited", async () => {
      const first = { ...next('T1', 1, T0), cardLastCompleted: none };
      const repeat = { ...next('T1', 2, T0 + 10_000), cardLastCompleted: none, repeatOfTapId: 'T1:1' };
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [first, repeat] });
      const h = await held();
      expect(h.map((x) => [x.tap!.tapId, x.state, x.amountDue?.minorUnits, x.repeatOfTapId])).to.deep.equal([
        ['T1:1', TapState.TAP_STATE_RECEIVED, '200', ''],
        ['T1:2', TapState.TAP_STATE_REPEATED, '0', 'T1:1'],
      ]);
      expect(h[1].tap, 'as reported').to.deep.equal(repeat);
      expect(h[1].charged).to.deep.equal(money(0));
      expect(await debitedIds()).to.deep.equal(['T1:1']);
    });

    it('refuses a repeat of another terminal\'s tap, or of itself', async () => {
      const other = { ...next('T1', 1, T0), repeatOfTapId: 'T2:7' };
      const err = await expectApiError(reportTaps(t.ctx, { terminalId: 'T1', taps: [other] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
      expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['taps[0].repeat_of_tap_id']);
      await expectApiError(reportTaps(t.ctx, { terminalId: 'T1', taps: [{ ...other, repeatOfTapId: other.tapId }] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
      expect(await held()).to.deep.equal([]);
    });

    for (const order of ['in order', 'the later log first'] as const) {
      it(`charges one ride for a torn tap and the card's tap at another terminal of the line within the window (two logs after a failover, ${order})`, async () => {
        const torn = { ...next('T1', 1, T0), lineId: 'M1', cardLastCompleted: none };
        // The card's record at the second terminal does not show the first tap: its gate never opened.
        const again = { ...next('T2', 1, T0 + 30_000), lineId: 'M1', cardLastCompleted: none };
        const reports = [{ terminalId: 'T1', taps: [torn] }, { terminalId: 'T2', taps: [again] }];
        if (order === 'the later log first') reports.reverse();
        for (const r of reports) await reportTaps(t.ctx, r);
        const h = await held();
        const [charged, repeated] = order === 'in order' ? [torn, again] : [again, torn];
        const byId = new Map(h.map((x) => [x.tap!.tapId, x]));
        expect(byId.get(charged.tapId)!.state).to.equal(TapState.TAP_STATE_RECEIVED);
        expect(byId.get(repeated.tapId)!).to.deep.include({ state: TapState.TAP_STATE_REPEATED, repeatOfTapId: charged.tapId });
        expect(await debitedIds()).to.deep.equal([charged.tapId]);
      });
    }

    it('charges both when the card record shows the first completed, when they are outside the window, or when the record is not reported', async () => {
      const a = { ...next('T1', 1, T0), cardLastCompleted: none };
      const b = { ...next('T1', 2, T0 + 10_000), cardLastCompleted: record(a) };
      const c = { ...next('T1', 3, T0 + 2 * MINUTE), cardLastCompleted: none };
      // Skipping a record (as a terminal that does not report it would): no evidence of a torn tap.
      const d = { ...next('T1', 4, T0 + 2 * MINUTE + 10_000) };
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [a, b, c, d] });
      expect((await held()).map((x) => x.state)).to.deep.equal(Array(4).fill(TapState.TAP_STATE_RECEIVED));
    });

    it('pairs a tap once: a third tap in the window is a ride of its own', async () => {
      const torn = { ...next('T1', 1, T0), cardLastCompleted: none };
      const second = { ...next('T1', 2, T0 + 10_000), cardLastCompleted: none };
      const third = { ...next('T1', 3, T0 + 20_000), cardLastCompleted: none };
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [torn, second] });
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [third] });
      // The third's record lags too, but the second is paired already (a repeat) and the first is taken.
      expect((await held()).map((x) => [x.tap!.tapId, x.state])).to.deep.equal([
        ['T1:1', TapState.TAP_STATE_RECEIVED],
        ['T1:2', TapState.TAP_STATE_REPEATED],
        ['T1:3', TapState.TAP_STATE_RECEIVED],
      ]);
    });
  });

  describe('daily cap', () => {
    beforeEach(() => {
      t.ctx.fareCap = { dailyCapMinor: 500n, dayStartMinutes: 240, utcOffsetMinutes: 480 };
    });

    it('charges fares in arrival order until the cap, then the rest, then nothing (CAPPED, final, charged zero)', async () => {
      const taps = [0, 1, 2, 3].map((i) => next('T1', i + 1, T0 + i * MINUTE));
      await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(0, 2) });
      await reportTaps(t.ctx, { terminalId: 'T1', taps: taps.slice(2) });
      const h = await held();
      expect(h.map((x) => [x.amountDue?.minorUnits, x.state])).to.deep.equal([
        ['200', TapState.TAP_STATE_RECEIVED],
        ['200', TapState.TAP_STATE_RECEIVED],
        ['100', TapState.TAP_STATE_RECEIVED],
        ['0', TapState.TAP_STATE_CAPPED],
      ]);
      expect(h[3].charged).to.deep.equal(money(0));
      expect(h[3].history.map((x) => x.state)).to.deep.equal([TapState.TAP_STATE_CAPPED]);
      expect(h.every((x) => x.serviceDay === '2030-03-10')).to.equal(true);

      // The debit asks for the amount due; a CAPPED tap is never sent.
      await deductStep(t.ctx);
      expect(t.authorizer.deductCalls[0].items.map((i) => [i.requestId, i.amount!.minorUnits])).to.deep.equal([
        ['T1:1', '200'],
        ['T1:2', '200'],
        ['T1:3', '100'],
      ]);
      expect((await held()).map((x) => x.charged?.minorUnits)).to.deep.equal(['200', '200', '100', '0']);
    });

    it('starts a new service day at the boundary, not at midnight', async () => {
      const lateNight = Date.parse('2030-03-10T19:30:00Z'); // 03:30 on the 11th, local: still the 10th's service day
      const taps = [
        next('T1', 1, lateNight - 60 * MINUTE),
        next('T1', 2, lateNight - 30 * MINUTE),
        next('T1', 3, lateNight),
        next('T1', 4, lateNight + 31 * MINUTE), // 04:01 local: a new day
      ];
      await reportTaps(t.ctx, { terminalId: 'T1', taps });
      expect((await held()).map((x) => [x.serviceDay, x.amountDue?.minorUnits])).to.deep.equal([
        ['2030-03-10', '200'],
        ['2030-03-10', '200'],
        ['2030-03-10', '100'],
        ['2030-03-11', '200'],
      ]);
    });

    it('counts nothing without a cap', async () => {
      t.ctx.fareCap = undefined;
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [1, 2, 3, 4].map((i) => next('T1', i, T0 + i * MINUTE)) });
      expect((await held()).map((x) => x.amountDue?.minorUnits)).to.deep.equal(['200', '200', '200', '200']);
    });
  });

  describe('clone detection', () => {
    it('does not flag taps that arrive out of order from two terminals', async () => {
      const a = next('T1', 1, T0);
      const b = next('T2', 1, T0 + 10 * MINUTE);
      const c = next('T1', 2, T0 + 20 * MINUTE);
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [b] });
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [a, c] });
      expect((await held()).map((x) => x.cloneSuspected)).to.deep.equal([false, false, false]);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal([]);
      expect((await getCard(t.ctx, { cardId: 'C1' })).card!.lastCounter).to.equal('4');
    });

    it('lists the card CLONED when two taps carry the same counter, and keeps and marks both', async () => {
      const copy = { ...card };
      const genuine = next('T1', 1, T0);
      const cloned = next('T2', 1, T0 + 5 * MINUTE, 200n, copy);
      expect(genuine.proof!.counter).to.equal(cloned.proof!.counter);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [genuine] });
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [cloned] });
      const h = await held();
      expect(h.map((x) => [x.tap!.tapId, x.state, x.cloneSuspected, x.cloneReason])).to.deep.equal([
        ['T1:1', TapState.TAP_STATE_RECEIVED, true, 'COUNTER_REPEATED'],
        ['T2:1', TapState.TAP_STATE_RECEIVED, true, 'COUNTER_REPEATED'],
      ]);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal(['CLONED']);
    });

    it('flags a later tap whose counter went back, and the earlier taps it contradicts', async () => {
      // An image copied before the enrollment read: an hour after two genuine rides its counter is behind.
      const copy = { ...card, counter: String(BigInt(card.counter) - 1n) };
      const genuine = [next('T1', 1, T0), next('T1', 2, T0 + MINUTE)];
      const cloned = next('T2', 1, T0 + 60 * MINUTE, 200n, copy);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: genuine });
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [cloned] });
      const h = await held();
      expect(h.filter((x) => x.cloneSuspected).map((x) => [x.tap!.tapId, x.cloneReason])).to.deep.equal([
        ['T1:1', 'COUNTER_WENT_BACK'],
        ['T1:2', 'COUNTER_WENT_BACK'],
        ['T2:1', 'COUNTER_WENT_BACK'],
      ]);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal(['CLONED']);
    });

    it('finds the evidence inside one batch', async () => {
      const copy = { ...card };
      const genuine = next('T1', 1, T0);
      const cloned = { ...next('T1', 2, T0 + MINUTE, 200n, copy) };
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [genuine, cloned] });
      expect((await held()).map((x) => x.cloneReason)).to.deep.equal(['COUNTER_REPEATED', 'COUNTER_REPEATED']);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal(['CLONED']);
    });

    it('tolerates terminal clocks a little apart', async () => {
      const first = next('T1', 1, T0 + 30_000);
      const second = next('T2', 1, T0); // taken after "first", by a clock 30 s behind
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [first] });
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [second] });
      expect((await held()).map((x) => x.cloneSuspected)).to.deep.equal([false, false]);
    });
  });

  describe('a terminal clock that jumps', () => {
    const receivedAt = (at: number) => {
      t.ctx.now = () => new Date(at);
    };
    beforeEach(() => {
      t.ctx.fareCap = { dailyCapMinor: 500n, dayStartMinutes: 240, utcOffsetMinutes: 480 };
    });

    it('back an hour: the tap is kept and charged, flagged CLOCK_BEHIND, on the day it was received, and no clone is suspected', async () => {
      receivedAt(T0);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [next('T1', 1, T0)] });
      receivedAt(T0 + 2 * MINUTE);
      const behind = next('T2', 1, T0 - 60 * MINUTE + MINUTE); // taken at T0+1min by a clock an hour back
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [behind] });
      const h = await held();
      expect(h.map((x) => [x.tap!.tapId, x.clockFlag, x.cloneSuspected, x.state, x.amountDue?.minorUnits])).to.deep.equal([
        ['T1:1', '', false, TapState.TAP_STATE_RECEIVED, '200'],
        ['T2:1', 'CLOCK_BEHIND', false, TapState.TAP_STATE_RECEIVED, '200'],
      ]);
      // Kept as reported: the terminal's time is evidence for the dispute desk.
      expect(h[1].tap!.tappedAt!.getTime()).to.equal(behind.tappedAt!.getTime());
      expect(h[1].serviceDay).to.equal(serviceDay(T0 + 2 * MINUTE, t.ctx.fareCap!));
      expect(await cardReasons(t.db, 'C1')).to.deep.equal([]);
    });

    it('forward a day: flagged CLOCK_AHEAD, counted against today\'s cap, and the next genuine tap is neither behind nor a clone', async () => {
      receivedAt(T0);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [next('T1', 1, T0)] });
      receivedAt(T0 + 2 * MINUTE);
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [next('T2', 1, T0 + 24 * 60 * MINUTE)] });
      receivedAt(T0 + 10 * MINUTE);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [next('T1', 2, T0 + 10 * MINUTE)] });
      const h = await held();
      expect(h.map((x) => [x.tap!.tapId, x.clockFlag, x.serviceDay, x.amountDue?.minorUnits, x.cloneSuspected])).to.deep.equal([
        ['T1:1', '', '2030-03-10', '200', false],
        ['T2:1', 'CLOCK_AHEAD', '2030-03-10', '200', false],
        ['T1:2', '', '2030-03-10', '100', false], // the cap holds across the three
      ]);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal([]);
    });

    it('a clone is still caught by a repeated counter when the clone\'s terminal clock jumped', async () => {
      const copy = { ...card };
      receivedAt(T0);
      await reportTaps(t.ctx, { terminalId: 'T1', taps: [next('T1', 1, T0)] });
      receivedAt(T0 + MINUTE);
      await reportTaps(t.ctx, { terminalId: 'T2', taps: [next('T2', 1, T0 + 24 * 60 * MINUTE, 200n, copy)] });
      expect((await held()).map((x) => [x.clockFlag, x.cloneReason])).to.deep.equal([
        ['', 'COUNTER_REPEATED'],
        ['CLOCK_AHEAD', 'COUNTER_REPEATED'],
      ]);
      expect(await cardReasons(t.db, 'C1')).to.deep.equal(['CLONED']);
    });
  });
});
