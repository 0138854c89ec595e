// The fare engine: one table-driven case per rule, the corrections after a
// late tap, and properties that must hold for any taps (caps, refunds never
// above charges, arrival order never mattering).
import { expect } from 'chai';
import fc from 'fast-check';
import { fareCorrections, FareEngineError, isoWeekOf, priceJourneys, type FareTap, type PricedJourney } from '../../issuer/fare-engine.js';
import { parseFareModel, readFareModelFile, type FareModel } from '../../issuer/fare-model.js';

// Line M1: A - B - C - D (zones 1 1 2 3); buses B1 and B2. v1 is a table;
// from midnight (local) on 1 March, v2 prices by zones (300 + 100 per zone).
const BASE = {
  currency: 'CNY',
  serviceDay: { start: '04:00', utcOffset: '+08:00' },
  stations: [
    { id: 'A', zone: 1 },
    { id: 'B', zone: 1 },
    { id: 'C', zone: 2 },
    { id: 'D', zone: 3 },
  ],
  lines: [
    { id: 'M1', kind: 'METRO', stations: ['A', 'B', 'C', 'D'] },
    { id: 'B1', kind: 'FLAT' },
    { id: 'B2', kind: 'FLAT' },
  ],
  versions: [
    {
      id: 'v1',
      effectiveFrom: '2026-01-01T00:00:00+08:00',
      metro: { table: { A: { B: 300, C: 400, D: 600 }, B: { C: 300, D: 500 }, C: { D: 300 } } },
      flat: { B1: 200, B2: 150 },
    },
    { id: 'v2', effectiveFrom: '2026-03-01T00:00:00+08:00', metro: { zones: { base: 300, perZoneCrossed: 100 } }, flat: { B1: 250, B2: 150 } },
  ],
  journeys: { incompleteWindowMinutes: 180, repeatWindowSeconds: 60, sameStation: { withinMinutes: 20, fare: 0 } },
  transfers: [
    { from: 'FLAT', to: 'METRO', withinMinutes: 60, discount: { amount: 100 } },
    { from: 'METRO', to: 'FLAT', withinMinutes: 30, discount: { percent: 50 } },
  ],
  concessions: {
    student: { percentOff: 50, caps: { daily: 500 } },
    senior: { flatFare: 100 },
  },
};

function model(change: (f: any) => void = () => {}): FareModel {
  const f = structuredClone(BASE);
  change(f);
  return parseFareModel(f);
}
const M = model();

/** Local time at UTC+8; 2026-02-02 is a Monday. */
const at = (local: string) => Date.parse(`${local.replace(' ', 'T')}+08:00`);
const MIN = 60_000;
const HOUR = 60 * MIN;
const entry = (tapId: string, local: string, stationId: string, extra: Partial<FareTap> = {}): FareTap => ({ tapId, atMs: at(local), kind: 'ENTRY', stationId, ...extra });
const exit = (tapId: string, local: string, stationId: string, extra: Partial<FareTap> = {}): FareTap => ({ tapId, atMs: at(local), kind: 'EXIT', stationId, ...extra });
const bus = (tapId: string, local: string, lineId: string, extra: Partial<FareTap> = {}): FareTap => ({ tapId, atMs: at(local), kind: 'FLAT', lineId, ...extra });
const LATER = at('2026-12-31 00:00');

/** A journey in one line: id status basis nominal -> charged [discounts]. */
const brief = (j: PricedJourney) =>
  `${j.id} ${j.status} ${j.fareBasis} ${j.fareVersion} ${j.nominal}->${j.charged}` + j.discounts.map((d) => ` ${d.kind}-${d.amount}`).join('');

function price(taps: FareTap[], opts: { nowMs?: number; profile?: string; model?: FareModel } = {}) {
  return priceJourneys({ model: opts.model ?? M, profile: opts.profile, taps, nowMs: opts.nowMs ?? LATER });
}

interface Case {
  name: string;
  taps: FareTap[];
  nowMs?: number;
  profile?: string;
  model?: FareModel;
  want: string[];
}

function runCases(cases: Case[]) {
  for (const c of cases) {
    it(c.name, () => {
      const got = price(c.taps, c).journeys.map(brief);
      expect(got).to.deep.equal(c.want);
      // The same set of taps in reverse arrival order prices the same.
      expect(price([...c.taps].reverse(), c).journeys.map(brief)).to.deep.equal(c.want);
    });
  }
}

describe('issuer: fare engine', () => {
  describe('metro journeys', () => {
    runCases([
      { name: 'an entry and its exit: the fare between the two stations', taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 08:25', 'C')], want: ['e1 COMPLETE STATIONS v1 400->400'] },
      { name: 'the exit tap arriving before the entry tap changes nothing', taps: [exit('x1', '2026-02-02 08:25', 'C'), entry('e1', '2026-02-02 08:00', 'A')], want: ['e1 COMPLETE STATIONS v1 400->400'] },
      { name: 'a table is symmetric', taps: [entry('e1', '2026-02-02 08:00', 'D'), exit('x1', '2026-02-02 08:25', 'A')], want: ['e1 COMPLETE STATIONS v1 600->600'] },
      {
        name: 'a journey that starts before a fare change at midnight is charged by the old version',
        taps: [entry('e1', '2026-02-28 23:55', 'A'), exit('x1', '2026-03-01 00:20', 'D')],
        want: ['e1 COMPLETE STATIONS v1 600->600'],
      },
      {
        name: 'a journey that starts after it, by the new one (zones 1 -> 3: 300 + 2 x 100)',
        taps: [entry('e1', '2026-03-01 00:00', 'A'), exit('x1', '2026-03-01 00:20', 'D')],
        want: ['e1 COMPLETE STATIONS v2 500->500'],
      },
      {
        name: 'each entry pairs with the next exit',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 08:20', 'B'), entry('e2', '2026-02-02 17:00', 'B'), exit('x2', '2026-02-02 17:30', 'D')],
        want: ['e1 COMPLETE STATIONS v1 300->300', 'e2 COMPLETE STATIONS v1 500->500'],
      },
      {
        name: 'an exit exactly at the end of the window still pairs',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 11:00', 'B')],
        want: ['e1 COMPLETE STATIONS v1 300->300'],
      },
    ]);
  });

  describe('incomplete journeys', () => {
    runCases([
      { name: 'an entry with no exit is OPEN and not charged inside the window', taps: [entry('e1', '2026-02-02 08:00', 'A')], nowMs: at('2026-02-02 11:00'), want: ['e1 OPEN PENDING v1 0->0'] },
      {
        name: 'past the window it is INCOMPLETE: the maximum fare from that station',
        taps: [entry('e1', '2026-02-02 08:00', 'A')],
        nowMs: at('2026-02-02 11:00') + 1,
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600'],
      },
      { name: 'an exit with no entry is OPEN inside the window', taps: [exit('x1', '2026-02-02 08:00', 'C')], nowMs: at('2026-02-02 10:59'), want: ['x1 OPEN PENDING v1 0->0'] },
      { name: 'and then the maximum fare to that station', taps: [exit('x1', '2026-02-02 08:00', 'C')], want: ['x1 INCOMPLETE MAX_TO_EXIT v1 400->400'] },
      {
        name: 'an exit later than the window after the entry does not pair: two incomplete journeys',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 11:01', 'B')],
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'x1 INCOMPLETE MAX_TO_EXIT v1 500->500'],
      },
      {
        name: 'an entry followed by an entry at another station: the first has no exit',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), entry('e2', '2026-02-02 08:30', 'B'), exit('x2', '2026-02-02 08:50', 'C')],
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'e2 COMPLETE STATIONS v1 300->300'],
      },
      {
        name: 'a bus ride between an entry and an exit: the rider left the metro untapped, neither pairs',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), bus('b1', '2026-02-02 08:30', 'B2'), exit('x1', '2026-02-02 09:30', 'C')],
        model: model((f) => (f.transfers = [])),
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'b1 COMPLETE FLAT_LINE v1 150->150', 'x1 INCOMPLETE MAX_TO_EXIT v1 400->400'],
      },
      {
        name: 'an incomplete journey at the old version uses its maximum fare',
        taps: [entry('e1', '2026-02-28 23:00', 'B')],
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 500->500'],
      },
    ]);

    it('the late exit completes the journey: one journey, the A-B fare, and 300 of the 600 charged goes back', () => {
      const e1 = entry('e1', '2026-02-02 08:00', 'A');
      const before = price([e1]);
      expect(before.journeys.map(brief)).to.deep.equal(['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600']);
      const after = price([e1, exit('x1', '2026-02-02 08:20', 'B')]);
      expect(after.journeys.map(brief)).to.deep.equal(['e1 COMPLETE STATIONS v1 300->300']);
      expect(fareCorrections(new Map([['e1', 600n]]), after.journeys)).to.deep.equal({ refunds: [{ journeyId: 'e1', chargedUnder: 'e1', amount: 300n }], increases: [] });
    });

    it('the late entry completes an exit charged the maximum: the charge follows the journey to its new id', () => {
      const x1 = exit('x1', '2026-02-02 08:20', 'B');
      expect(price([x1]).journeys.map(brief)).to.deep.equal(['x1 INCOMPLETE MAX_TO_EXIT v1 500->500']);
      const after = price([x1, entry('e1', '2026-02-02 08:00', 'A')]);
      expect(after.journeys.map(brief)).to.deep.equal(['e1 COMPLETE STATIONS v1 300->300']);
      expect(after.journeys[0].taps.map((t) => `${t.tapId}:${t.role}`)).to.deep.equal(['e1:ENTRY', 'x1:EXIT']);
      expect(fareCorrections(new Map([['x1', 500n]]), after.journeys)).to.deep.equal({ refunds: [{ journeyId: 'e1', chargedUnder: 'x1', amount: 200n }], increases: [] });
    });
  });

  describe('same station', () => {
    runCases([
      { name: 'entry and exit at one station within 20 minutes cost nothing', taps: [entry('e1', '2026-02-02 08:00', 'B'), exit('x1', '2026-02-02 08:20', 'B')], want: ['e1 COMPLETE SAME_STATION v1 0->0'] },
      {
        name: 'or a fixed minimum, when configured',
        taps: [entry('e1', '2026-02-02 08:00', 'B'), exit('x1', '2026-02-02 08:05', 'B')],
        model: model((f) => (f.journeys.sameStation = { withinMinutes: 10, fare: 200 })),
        want: ['e1 COMPLETE SAME_STATION v1 200->200'],
      },
      {
        name: 'later than that: the maximum fare from the station',
        taps: [entry('e1', '2026-02-02 08:00', 'B'), exit('x1', '2026-02-02 08:21', 'B')],
        want: ['e1 COMPLETE SAME_STATION_OVERSTAY v1 500->500'],
      },
    ]);
  });

  describe('repeated taps', () => {
    runCases([
      {
        name: 'a re-entry at the same station within the repeat window replaces the first entry',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), entry('e2', '2026-02-02 08:00:50', 'A'), exit('x1', '2026-02-02 08:30', 'C')],
        want: ['e2 COMPLETE STATIONS v1 400->400'],
      },
      {
        name: 'a re-entry after the window: the first entry is incomplete',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), entry('e2', '2026-02-02 08:01:01', 'A'), exit('x1', '2026-02-02 08:30', 'C')],
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'e2 COMPLETE STATIONS v1 400->400'],
      },
      {
        name: 'two taps on one bus line within the window are one ride',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), bus('b2', '2026-02-02 08:01', 'B1')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200'],
      },
      {
        name: 'a minute and a second apart they are two',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), bus('b2', '2026-02-02 08:01:01', 'B1')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'b2 COMPLETE FLAT_LINE v1 200->200'],
      },
      {
        name: 'taps on two bus lines are two rides',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), bus('b2', '2026-02-02 08:00:10', 'B2')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'b2 COMPLETE FLAT_LINE v1 150->150'],
      },
      {
        name: 'a tap the terminal marked as a repeat is never charged',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), bus('b2', '2026-02-02 09:00', 'B1', { repeatOfTapId: 'b1' })],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200'],
      },
      {
        name: 'a marked repeat of an entry neither pairs nor replaces it',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x9', '2026-02-02 08:00:30', 'A', { repeatOfTapId: 'e1' }), exit('x1', '2026-02-02 08:30', 'D')],
        want: ['e1 COMPLETE STATIONS v1 600->600'],
      },
    ]);

    it('links the repeats: the replaced entry to its replacement, a second bus tap and a marked repeat to the first', () => {
      const r = price([
        entry('e1', '2026-02-02 08:00', 'A'),
        entry('e2', '2026-02-02 08:00:50', 'A'),
        exit('x1', '2026-02-02 08:30', 'C'),
        entry('e3', '2026-02-02 08:30:20', 'C', { repeatOfTapId: 'x1' }),
        bus('b1', '2026-02-02 09:00', 'B1'),
        bus('b2', '2026-02-02 09:00:30', 'B1'),
        bus('b3', '2026-02-02 09:00:40', 'B1', { repeatOfTapId: 'b2' }),
      ]);
      expect(r.journeys.map((j) => [j.id, j.taps.map((t) => `${t.tapId}:${t.role}${t.repeatOf ? `>${t.repeatOf}` : ''}`)])).to.deep.equal([
        ['e2', ['e1:REPEAT>e2', 'e2:ENTRY', 'x1:EXIT', 'e3:REPEAT>x1']],
        ['b1', ['b1:RIDE', 'b2:REPEAT>b1', 'b3:REPEAT>b2']],
      ]);
      expect(r.unlinkedRepeats).to.deep.equal([]);
    });

    it('a marked repeat whose first tap has not arrived is held apart, uncharged', () => {
      const b2 = bus('b2', '2026-02-02 08:00:30', 'B1', { repeatOfTapId: 'b1' });
      const r = price([b2]);
      expect(r.journeys).to.deep.equal([]);
      expect(r.unlinkedRepeats).to.deep.equal([b2]);
    });
  });

  describe('transfers', () => {
    runCases([
      {
        name: 'bus to metro within 60 minutes: 100 off the metro fare',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 09:00', 'A'), exit('x1', '2026-02-02 09:20', 'C')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'e1 COMPLETE STATIONS v1 400->300 TRANSFER-100'],
      },
      {
        name: 'after 60 minutes: no discount',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 09:00:01', 'A'), exit('x1', '2026-02-02 09:20', 'C')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'e1 COMPLETE STATIONS v1 400->400'],
      },
      {
        name: 'metro to bus within 30 minutes of the exit: 50% off the bus fare',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 08:50', 'C'), bus('b1', '2026-02-02 09:20', 'B1')],
        want: ['e1 COMPLETE STATIONS v1 400->400', 'b1 COMPLETE FLAT_LINE v1 200->100 TRANSFER-100'],
      },
      {
        name: 'bus to bus has no rule here: no discount',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), bus('b2', '2026-02-02 08:10', 'B2')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'b2 COMPLETE FLAT_LINE v1 150->150'],
      },
      {
        name: 'an incomplete journey neither gives nor gets a transfer',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 08:10', 'A'), exit('x1', '2026-02-02 12:00', 'C'), bus('b2', '2026-02-02 12:10', 'B1')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'x1 INCOMPLETE MAX_TO_EXIT v1 400->400', 'b2 COMPLETE FLAT_LINE v1 200->200'],
      },
      {
        name: 'a discount never makes a fare negative',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 08:10', 'C'), exit('x1', '2026-02-02 08:12', 'C')],
        model: model((f) => (f.journeys.sameStation.fare = 50)),
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'e1 COMPLETE SAME_STATION v1 50->0 TRANSFER-50'],
      },
      {
        name: 'a ride that follows a transfer can be a transfer too',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 08:30', 'A'), exit('x1', '2026-02-02 08:50', 'B'), bus('b2', '2026-02-02 09:00', 'B2')],
        want: ['b1 COMPLETE FLAT_LINE v1 200->200', 'e1 COMPLETE STATIONS v1 300->200 TRANSFER-100', 'b2 COMPLETE FLAT_LINE v1 150->75 TRANSFER-75'],
      },
    ]);
  });

  describe('concessions', () => {
    runCases([
      {
        name: 'a percentage off, rounded half up to the rider',
        taps: [bus('b1', '2026-02-02 08:00', 'B2')],
        profile: 'student',
        want: ['b1 COMPLETE FLAT_LINE v1 150->75 CONCESSION-75'],
      },
      {
        name: 'a flat fare',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 08:20', 'D')],
        profile: 'senior',
        want: ['e1 COMPLETE STATIONS v1 600->100 CONCESSION-500'],
      },
      {
        name: 'a flat fare never raises a cheaper fare',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), exit('x1', '2026-02-02 08:05', 'A')],
        profile: 'senior',
        want: ['e1 COMPLETE SAME_STATION v1 0->0'],
      },
      {
        name: 'after the transfer discount',
        taps: [bus('b1', '2026-02-02 08:00', 'B1'), entry('e1', '2026-02-02 08:30', 'A'), exit('x1', '2026-02-02 08:50', 'C')],
        profile: 'student',
        want: ['b1 COMPLETE FLAT_LINE v1 200->100 CONCESSION-100', 'e1 COMPLETE STATIONS v1 400->150 TRANSFER-100 CONCESSION-150'],
      },
      {
        name: 'before the caps, and with caps of its own (student: 500 a day)',
        taps: [
          entry('e1', '2026-02-02 08:00', 'A'),
          exit('x1', '2026-02-02 08:20', 'D'),
          entry('e2', '2026-02-02 12:00', 'D'),
          exit('x2', '2026-02-02 12:20', 'A'),
          entry('e3', '2026-02-02 18:00', 'A'),
          exit('x3', '2026-02-02 18:20', 'D'),
        ],
        profile: 'student',
        model: model((f) => (f.caps = { daily: 1000 })),
        want: [
          'e1 COMPLETE STATIONS v1 600->300 CONCESSION-300',
          'e2 COMPLETE STATIONS v1 600->200 CONCESSION-300 DAILY_CAP-100',
          'e3 COMPLETE STATIONS v1 600->0 CONCESSION-300 DAILY_CAP-300',
        ],
      },
    ]);

    it('an unknown profile is an error, not a full fare', () => {
      expect(() => price([bus('b1', '2026-02-02 08:00', 'B1')], { profile: 'veteran' })).to.throw(FareEngineError, /unknown concession profile "veteran" \(the model has: student, senior\)/);
    });
  });

  describe('caps', () => {
    const capped = model((f) => (f.caps = { daily: 1000, weekly: 3000 }));
    runCases([
      {
        name: 'the daily cap: the day never costs more than 1000',
        taps: [
          entry('e1', '2026-02-02 08:00', 'A'),
          exit('x1', '2026-02-02 08:20', 'D'),
          entry('e2', '2026-02-02 12:00', 'D'),
          exit('x2', '2026-02-02 12:20', 'A'),
          bus('b1', '2026-02-02 19:00', 'B1'),
        ],
        model: capped,
        want: ['e1 COMPLETE STATIONS v1 600->600', 'e2 COMPLETE STATIONS v1 600->400 DAILY_CAP-200', 'b1 COMPLETE FLAT_LINE v1 200->0 DAILY_CAP-200'],
      },
      {
        name: 'a ride at 03:30 belongs to the service day before (it starts at 04:00)',
        taps: [entry('e1', '2026-02-02 20:00', 'A'), exit('x1', '2026-02-02 20:20', 'D'), entry('e2', '2026-02-03 03:30', 'D'), exit('x2', '2026-02-03 03:50', 'A'), bus('b1', '2026-02-03 04:30', 'B1')],
        model: model((f) => (f.caps = { daily: 1000 })),
        want: ['e1 COMPLETE STATIONS v1 600->600', 'e2 COMPLETE STATIONS v1 600->400 DAILY_CAP-200', 'b1 COMPLETE FLAT_LINE v1 200->200'],
      },
      {
        name: 'an incomplete journey counts toward the cap and is capped too',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), entry('e2', '2026-02-02 12:00', 'D')],
        model: model((f) => (f.caps = { daily: 1000 })),
        want: ['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600', 'e2 INCOMPLETE MAX_FROM_ENTRY v1 600->400 DAILY_CAP-200'],
      },
      {
        name: 'an OPEN journey takes no room under the cap yet',
        taps: [entry('e1', '2026-02-02 08:00', 'A'), bus('b1', '2026-02-02 09:00', 'B1')],
        nowMs: at('2026-02-02 09:00'),
        model: model((f) => (f.caps = { daily: 150 })),
        want: ['e1 OPEN PENDING v1 0->0', 'b1 COMPLETE FLAT_LINE v1 200->150 DAILY_CAP-50'],
      },
    ]);

    it('the weekly cap holds across seven service days and stops charges for the rest of that week; the next Monday charges again', () => {
      // 600 a day (two A-B rides), a weekly cap of 3000: five days fill it.
      const taps: FareTap[] = [];
      for (let d = 2; d <= 9; d++) {
        const day = `2026-02-${String(d).padStart(2, '0')}`;
        taps.push(entry(`m${d}`, `${day} 08:00`, 'A'), exit(`n${d}`, `${day} 08:20`, 'B'), entry(`e${d}`, `${day} 18:00`, 'B'), exit(`x${d}`, `${day} 18:20`, 'A'));
      }
      const r = price(taps, { model: capped });
      const byDay = new Map<string, bigint>();
      for (const j of r.journeys) byDay.set(j.serviceDay, (byDay.get(j.serviceDay) ?? 0n) + j.charged);
      expect([...byDay]).to.deep.equal([
        ['2026-02-02', 600n],
        ['2026-02-03', 600n],
        ['2026-02-04', 600n],
        ['2026-02-05', 600n],
        ['2026-02-06', 600n],
        ['2026-02-07', 0n],
        ['2026-02-08', 0n],
        ['2026-02-09', 600n],
      ]);
      const saturday = r.journeys.filter((j) => j.serviceDay === '2026-02-07');
      expect(saturday.map(brief)).to.deep.equal(['m7 COMPLETE STATIONS v1 300->0 WEEKLY_CAP-300', 'e7 COMPLETE STATIONS v1 300->0 WEEKLY_CAP-300']);
      expect(saturday[0].discounts[0].detail).to.equal('weekly cap 3000 in 2026-W06');
    });

    it('numbers ISO weeks from Monday, across a year end', () => {
      expect(['2026-02-01', '2026-02-02', '2026-02-08', '2026-02-09'].map(isoWeekOf)).to.deep.equal(['2026-W05', '2026-W06', '2026-W06', '2026-W07']);
      expect(['2024-12-29', '2024-12-30', '2025-01-05', '2026-12-31', '2027-01-03', '2027-01-04'].map(isoWeekOf)).to.deep.equal([
        '2024-W52',
        '2025-W01',
        '2025-W01',
        '2026-W53',
        '2026-W53',
        '2027-W01',
      ]);
    });
  });

  describe('input', () => {
    it('the same tap given twice is one tap; two different taps under one id are refused', () => {
      const b1 = bus('b1', '2026-02-02 08:00', 'B1');
      expect(price([b1, { ...b1 }]).journeys.map(brief)).to.deep.equal(['b1 COMPLETE FLAT_LINE v1 200->200']);
      expect(() => price([b1, { ...b1, lineId: 'B2' }])).to.throw(FareEngineError, /tap id b1 is used by two different taps/);
    });

    it('refuses a tap the model cannot price, naming it', () => {
      expect(() => price([entry('e1', '2026-02-02 08:00', 'Z')])).to.throw(FareEngineError, /tap e1: unknown station "Z"/);
      expect(() => price([bus('b1', '2026-02-02 08:00', 'M1')])).to.throw(FareEngineError, /tap b1: line M1 is a METRO line/);
      expect(() => price([bus('b1', '2026-02-02 08:00', 'B9')])).to.throw(FareEngineError, /tap b1: unknown line "B9"/);
      expect(() => price([{ tapId: 'q', atMs: 1.5, kind: 'FLAT', lineId: 'B1' }])).to.throw(FareEngineError, /whole epoch milliseconds/);
    });

    it('taps at the same moment are ordered by tap id', () => {
      const r = price([bus('b', '2026-02-02 08:00', 'B1'), bus('a', '2026-02-02 08:00', 'B1')]);
      expect(r.journeys.map(brief)).to.deep.equal(['a COMPLETE FLAT_LINE v1 200->200']);
      expect(r.journeys[0].taps.map((t) => `${t.tapId}:${t.role}`)).to.deep.equal(['a:RIDE', 'b:REPEAT']);
    });

    it('prices a day on the example network', () => {
      const ex = readFareModelFile('config/fares.example.json');
      const r = priceJourneys({
        model: ex,
        taps: [bus('b1', '2026-03-02 07:40', 'B12'), entry('e1', '2026-03-02 08:00', 'HBR'), exit('x1', '2026-03-02 08:35', 'APT'), bus('b2', '2026-03-02 09:00', 'B7')],
        nowMs: LATER,
      });
      expect(r.currency).to.equal('CNY');
      expect(r.journeys.map(brief)).to.deep.equal([
        'b1 COMPLETE FLAT_LINE 2026-01 200->200',
        'e1 COMPLETE STATIONS 2026-01 700->600 TRANSFER-100',
        'b2 COMPLETE FLAT_LINE 2026-01 200->100 TRANSFER-100',
      ]);
    });
  });

  describe('corrections', () => {
    const j = (id: string, charged: bigint, tapIds: string[] = [id]): PricedJourney => ({ ...price([bus(id, '2026-02-02 08:00', 'B1')]).journeys[0], id, charged, taps: tapIds.map((t) => ({ ...bus(t, '2026-02-02 08:00', 'B1'), role: 'RIDE' as const })) });

    it('nothing to do when the charges match', () => {
      expect(fareCorrections(new Map([['a', 200n]]), [j('a', 200n)])).to.deep.equal({ refunds: [], increases: [] });
    });

    it('a cheaper journey is refunded the difference', () => {
      expect(fareCorrections(new Map([['a', 600n]]), [j('a', 250n)])).to.deep.equal({ refunds: [{ journeyId: 'a', chargedUnder: 'a', amount: 350n }], increases: [] });
    });

    it('a dearer journey is reported as an increase, never refunded or netted', () => {
      expect(fareCorrections(new Map([['a', 200n]]), [j('a', 300n), j('b', 150n)])).to.deep.equal({
        refunds: [],
        increases: [
          { journeyId: 'a', previouslyCharged: 200n, charged: 300n, amount: 100n },
          { journeyId: 'b', previouslyCharged: 0n, charged: 150n, amount: 150n },
        ],
      });
    });

    it('a journey holding two earlier charges is refunded out of both, its own first, never more than either', () => {
      const r = fareCorrections(
        new Map([
          ['x', 500n],
          ['e', 100n],
        ]),
        [j('e', 0n, ['e', 'x'])],
      );
      expect(r).to.deep.equal({
        refunds: [
          { journeyId: 'e', chargedUnder: 'e', amount: 100n },
          { journeyId: 'e', chargedUnder: 'x', amount: 500n },
        ],
        increases: [],
      });
    });

    it('an OPEN journey keeps what it claims until it is priced: no refund now, no second charge later', () => {
      const e1 = entry('e1', '2026-02-02 08:00', 'A');
      const e2 = entry('e2', '2026-02-02 08:00:50', 'A');
      const first = price([e1], { nowMs: at('2026-02-02 11:00:10') });
      expect(first.journeys.map(brief)).to.deep.equal(['e1 INCOMPLETE MAX_FROM_ENTRY v1 600->600']);
      const replaced = price([e1, e2], { nowMs: at('2026-02-02 11:00:20') });
      expect(replaced.journeys.map(brief)).to.deep.equal(['e2 OPEN PENDING v1 0->0']);
      expect(fareCorrections(new Map([['e1', 600n]]), replaced.journeys)).to.deep.equal({ refunds: [], increases: [] });
      const completed = price([e1, e2, exit('x1', '2026-02-02 08:30', 'B')], { nowMs: at('2026-02-02 11:00:30') });
      expect(fareCorrections(new Map([['e1', 600n]]), completed.journeys)).to.deep.equal({ refunds: [{ journeyId: 'e2', chargedUnder: 'e1', amount: 300n }], increases: [] });
    });

    it('a charge no journey holds any more is refunded in full', () => {
      expect(fareCorrections(new Map([['gone', 300n], ['z', 0n]]), [])).to.deep.equal({ refunds: [{ journeyId: undefined, chargedUnder: 'gone', amount: 300n }], increases: [] });
    });

    it('refuses a negative charge', () => {
      expect(() => fareCorrections(new Map([['a', -1n]]), [])).to.throw(FareEngineError, /charge a is negative/);
    });
  });

  describe('properties', () => {
    const STATIONS = ['A', 'B', 'C', 'D'];
    const START = at('2026-02-23 05:00'); // a Monday, a week before the fare change
    /** One thing a rider does: a trip (entry and exit), a bus ride, a tap that lost its pair, a tap presented twice. */
    const arbRide = fc
      .record({
        day: fc.integer({ min: 0, max: 13 }),
        minute: fc.integer({ min: 0, max: 20 * 60 }),
        sec: fc.integer({ min: 0, max: 59 }),
        shape: fc.constantFrom('TRIP', 'TRIP', 'TRIP', 'BUS', 'BUS', 'ENTRY_ONLY', 'EXIT_ONLY', 'REENTRY', 'DOUBLE_BUS', 'MARKED_REPEAT'),
        from: fc.constantFrom(...STATIONS),
        to: fc.constantFrom(...STATIONS),
        line: fc.constantFrom('B1', 'B2'),
        minutes: fc.integer({ min: 1, max: 200 }),
        gapSec: fc.integer({ min: 1, max: 90 }),
      })
      .map((r) => {
        const t = START + r.day * 24 * HOUR + r.minute * MIN + r.sec * 1000;
        const e = { kind: 'ENTRY' as const, stationId: r.from };
        const x = { kind: 'EXIT' as const, stationId: r.to };
        const b = { kind: 'FLAT' as const, lineId: r.line };
        switch (r.shape) {
          case 'TRIP':
            return [{ ...e, atMs: t }, { ...x, atMs: t + r.minutes * MIN }];
          case 'BUS':
            return [{ ...b, atMs: t }];
          case 'ENTRY_ONLY':
            return [{ ...e, atMs: t }];
          case 'EXIT_ONLY':
            return [{ ...x, atMs: t }];
          case 'REENTRY':
            return [{ ...e, atMs: t }, { ...e, atMs: t + r.gapSec * 1000 }, { ...x, atMs: t + r.minutes * MIN }];
          case 'DOUBLE_BUS':
            return [{ ...b, atMs: t }, { ...b, atMs: t + r.gapSec * 1000 }];
          default:
            return [{ ...b, atMs: t }, { ...b, atMs: t + r.gapSec * 1000, repeatOfPrevious: true }];
        }
      });
    const arbTaps = fc.array(arbRide, { maxLength: 30 }).map((rides) => {
      const taps: FareTap[] = [];
      for (const ride of rides) {
        for (const { repeatOfPrevious, ...tap } of ride as (Omit<FareTap, 'tapId'> & { repeatOfPrevious?: boolean })[]) {
          const tapId = `t${String(taps.length).padStart(3, '0')}`;
          taps.push({ ...tap, tapId, ...(repeatOfPrevious && { repeatOfTapId: taps[taps.length - 1].tapId }) });
        }
      }
      return taps;
    });
    const arbSetup = fc.record({
      daily: fc.option(fc.integer({ min: 100, max: 2000 }), { nil: undefined }),
      weekly: fc.option(fc.integer({ min: 100, max: 8000 }), { nil: undefined }),
      profile: fc.constantFrom(undefined, 'student', 'senior'),
      sameFare: fc.integer({ min: 0, max: 300 }),
    });
    const setupModel = (s: { daily?: number; weekly?: number; sameFare: number }) =>
      model((f) => {
        f.caps = { ...(s.daily !== undefined && { daily: s.daily }), ...(s.weekly !== undefined && { weekly: s.weekly }) };
        f.journeys.sameStation.fare = s.sameFare;
      });

    it('the charged total never exceeds the daily cap per service day nor the weekly cap per week, and each journey adds up', () => {
      fc.assert(
        fc.property(arbSetup, arbTaps, fc.integer({ min: 0, max: 16 * 24 * 60 }), (s, taps, nowMin) => {
          const m = setupModel(s);
          const r = priceJourneys({ model: m, profile: s.profile, taps, nowMs: START + nowMin * MIN });
          const caps = { ...m.caps, ...(s.profile && m.concessions.get(s.profile)!.caps) };
          const day = new Map<string, bigint>();
          const week = new Map<string, bigint>();
          for (const j of r.journeys) {
            expect(j.charged >= 0n).to.equal(true);
            expect(j.nominal - j.discounts.reduce((sum, d) => sum + d.amount, 0n)).to.equal(j.charged);
            for (const d of j.discounts) expect(d.amount > 0n).to.equal(true);
            if (j.status === 'OPEN') expect(j.charged).to.equal(0n);
            day.set(j.serviceDay, (day.get(j.serviceDay) ?? 0n) + j.charged);
            week.set(j.isoWeek, (week.get(j.isoWeek) ?? 0n) + j.charged);
          }
          if (caps.daily !== undefined) for (const total of day.values()) expect(total <= caps.daily).to.equal(true);
          if (caps.weekly !== undefined) for (const total of week.values()) expect(total <= caps.weekly).to.equal(true);
          // Every tap is in exactly one journey, or held apart as an unlinked repeat.
          const seen = [...r.journeys.flatMap((j) => j.taps.map((t) => t.tapId)), ...r.unlinkedRepeats.map((t) => t.tapId)].sort();
          expect(seen).to.deep.equal(taps.map((t) => t.tapId).sort());
          // A marked repeat is never what a journey is charged for.
          for (const j of r.journeys) for (const t of j.taps) if (t.repeatOfTapId !== undefined) expect(t.role).to.equal('REPEAT');
        }),
        { numRuns: 300 },
      );
    });

    it('the order taps arrive in never changes the result', () => {
      fc.assert(
        fc.property(
          arbSetup,
          arbTaps.chain((taps) => fc.tuple(fc.constant(taps), fc.shuffledSubarray(taps, { minLength: taps.length, maxLength: taps.length }))),
          (s, [taps, shuffled]) => {
            const m = setupModel(s);
            const a = priceJourneys({ model: m, profile: s.profile, taps, nowMs: LATER });
            const b = priceJourneys({ model: m, profile: s.profile, taps: shuffled, nowMs: LATER });
            expect(b).to.deep.equal(a);
          },
        ),
        { numRuns: 300 },
      );
    });

    it('repricing after every late arrival: refunds never exceed charges, and once all taps are in, every arrival order ends with the same charges', () => {
      fc.assert(
        fc.property(
          arbSetup,
          arbTaps.chain((taps) =>
            fc.tuple(
              fc.constant(taps),
              fc.shuffledSubarray(taps, { minLength: taps.length, maxLength: taps.length }),
              fc.shuffledSubarray(taps, { minLength: taps.length, maxLength: taps.length }),
            ),
          ),
          (s, [, order1, order2]) => {
            const m = setupModel(s);
            const finals = [order1, order2].map((order) => {
              const debited = new Map<string, bigint>();
              const refunded = new Map<string, bigint>();
              const net = () => new Map([...debited].map(([id, d]) => [id, d - (refunded.get(id) ?? 0n)]));
              const known: FareTap[] = [];
              const settle = (nowMs: number) => {
                const r = priceJourneys({ model: m, profile: s.profile, taps: known, nowMs });
                const c = fareCorrections(net(), r.journeys);
                for (const f of c.refunds) {
                  expect(f.amount > 0n).to.equal(true);
                  refunded.set(f.chargedUnder, (refunded.get(f.chargedUnder) ?? 0n) + f.amount);
                  expect(refunded.get(f.chargedUnder)! <= (debited.get(f.chargedUnder) ?? 0n), `refunds under ${f.chargedUnder} exceed its charges`).to.equal(true);
                }
                for (const inc of c.increases) debited.set(inc.journeyId, (debited.get(inc.journeyId) ?? 0n) + inc.amount);
                return r;
              };
              // Taps arrive in this order, each some hours late.
              let clock = START;
              for (const t of order) {
                known.push(t);
                clock = Math.max(clock, t.atMs) + 2 * HOUR;
                settle(clock);
              }
              const r = settle(LATER);
              // Settled: a second pass finds nothing to do, and what each journey holds is what it costs.
              expect(fareCorrections(net(), r.journeys)).to.deep.equal({ refunds: [], increases: [] });
              const held = net();
              for (const j of r.journeys) expect(j.taps.reduce((sum, t) => sum + (held.get(t.tapId) ?? 0n), 0n)).to.equal(j.charged);
              return r.journeys.map((j) => [j.id, j.charged]);
            });
            expect(finals[1]).to.deep.equal(finals[0]);
          },
        ),
        { numRuns: 200 },
      );
    });
  });
});
