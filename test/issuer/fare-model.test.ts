// The operator's fare model file: what it may say, what it must not, and that
// every problem is reported with its path in the file.
import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FareModelError,
  fareModelToFile,
  flatFareModel,
  maximumFare,
  metroFare,
  parseFareModel,
  readFareModelFile,
  versionAt,
  type FareModelFile,
} from '../../issuer/fare-model.js';

const EXAMPLE = 'config/fares.example.json';

/** A small valid model; each test breaks one thing in a copy. */
function validFile(): any {
  return {
    currency: 'CNY',
    stations: [
      { id: 'A', zone: 1 },
      { id: 'B', zone: 1 },
      { id: 'C', zone: 2 },
    ],
    lines: [
      { id: 'M1', kind: 'METRO', stations: ['A', 'B', 'C'] },
      { id: 'B1', kind: 'FLAT' },
    ],
    versions: [
      { id: 'v1', effectiveFrom: '2026-01-01T00:00:00+08:00', metro: { table: { A: { B: 300, C: 400 }, B: { C: 300 } } }, flat: { B1: 200 } },
      { id: 'v2', effectiveFrom: '2026-03-01T00:00:00+08:00', metro: { zones: { base: 300, perZoneCrossed: 100 } }, flat: { B1: 250 } },
    ],
  };
}

function problems(file: unknown): { path: string; message: string }[] {
  try {
    parseFareModel(file);
  } catch (e) {
    expect(e).to.be.instanceOf(FareModelError);
    return (e as FareModelError).issues;
  }
  throw new Error('the model was accepted');
}

describe('issuer: fare model file', () => {
  it('reads the example file: six stations on two metro lines, two bus lines, two versions', () => {
    const m = readFareModelFile(EXAMPLE);
    expect([...m.stations.keys()]).to.deep.equal(['HBR', 'CEN', 'MUS', 'UNI', 'MKT', 'APT']);
    expect([...m.lines.values()].map((l) => `${l.id}:${l.kind}`)).to.deep.equal(['M1:METRO', 'M2:METRO', 'B12:FLAT', 'B7:FLAT']);
    expect(m.serviceDay).to.deep.equal({ dayStartMinutes: 240, utcOffsetMinutes: 480 });
    const [jan, jul] = m.versions;
    expect(metroFare(m, jan, 'HBR', 'APT')).to.equal(700n);
    expect(metroFare(m, jan, 'APT', 'HBR'), 'a table is symmetric').to.equal(700n);
    expect(maximumFare(m, jan, 'UNI')).to.equal(800n);
    expect(metroFare(m, jul, 'HBR', 'APT'), 'zones 1 -> 3: base + 2 zones').to.equal(600n);
    expect(versionAt(m, Date.parse('2026-07-01T03:59:59.999+08:00')).id).to.equal('2026-01');
    expect(versionAt(m, Date.parse('2026-07-01T04:00:00+08:00')).id).to.equal('2026-07');
    expect(versionAt(m, Date.parse('2025-12-01T00:00:00Z')).id, 'before the first version: the first').to.equal('2026-01');
    expect(m.rules).to.deep.equal({ incompleteWindowMs: 3 * 3600_000, repeatWindowMs: 60_000, sameStation: { withinMs: 20 * 60_000, fare: 0n } });
    expect(m.caps).to.deep.equal({ daily: 1500n, weekly: 6000n });
    expect(m.concessions.get('student')).to.deep.equal({ id: 'student', fare: { percentOff: 50 }, caps: { daily: 750n, weekly: 3000n } });
    expect(m.concessions.get('senior')).to.deep.equal({ id: 'senior', fare: { flatFare: 100n }, caps: {} });
  });

  it('fills the defaults: 3 h incomplete window, 60 s repeats, free same-station exit within 20 min, 04:00 UTC+8 service day, no caps', () => {
    const m = parseFareModel(validFile());
    expect(m.rules).to.deep.equal({ incompleteWindowMs: 180 * 60_000, repeatWindowMs: 60_000, sameStation: { withinMs: 20 * 60_000, fare: 0n } });
    expect(m.serviceDay).to.deep.equal({ dayStartMinutes: 240, utcOffsetMinutes: 480 });
    expect(m.caps).to.deep.equal({});
    expect(m.transfers).to.deep.equal([]);
  });

  it("expresses today's setup: flat fares per line and an optional daily cap, as a file or from the tariff", () => {
    const file = { currency: 'CNY', lines: [{ id: 'B12', kind: 'FLAT' }], versions: [{ id: 'today', effectiveFrom: '2020-01-01T00:00:00Z', flat: { B12: 200 } }], caps: { daily: 1500 } };
    const m = parseFareModel(file);
    expect(m.stations.size).to.equal(0);
    expect(m.versions[0].flat.get('B12')).to.equal(200n);
    expect(m.caps).to.deep.equal({ daily: 1500n });

    const built = flatFareModel({ currency: 'CNY', lines: new Map([['M1', 300n], ['B12', 200n]]), dailyCapMinor: 1500n, serviceDay: { dayStartMinutes: 240, utcOffsetMinutes: 480 } });
    expect([...built.lines.values()].map((l) => l.kind)).to.deep.equal(['FLAT', 'FLAT']);
    expect(built.versions[0].flat).to.deep.equal(new Map([['M1', 300n], ['B12', 200n]]));
    expect(built.caps).to.deep.equal({ daily: 1500n });
    expect(flatFareModel({ currency: 'CNY', lines: new Map([['M1', 300n]]), serviceDay: { dayStartMinutes: 0, utcOffsetMinutes: 0 } }).caps).to.deep.equal({});
  });

  it('docs/fares.md shows parts of the example file as they are, and a simplest model that loads', () => {
    const blocks = [...readFileSync('docs/fares.md', 'utf8').matchAll(/```json\n([\s\S]*?)```/g)].map((b) => JSON.parse(b[1]));
    const example = JSON.parse(readFileSync(EXAMPLE, 'utf8'));
    expect(blocks).to.have.length(4);
    expect(blocks[0]).to.deep.equal(example.versions[1]);
    expect(blocks[1]).to.deep.equal(example.transfers);
    expect(blocks[2]).to.deep.equal(example.concessions);
    const simplest = parseFareModel(blocks[3]);
    expect(simplest.versions[0].flat).to.deep.equal(new Map([['M1', 300n], ['B12', 200n]]));
    expect(simplest.caps).to.deep.equal({ daily: 1500n });
  });

  it('round-trips: the file written from a model reads back to the same model', () => {
    const m = readFareModelFile(EXAMPLE);
    const again = parseFareModel(JSON.parse(JSON.stringify(fareModelToFile(m))));
    expect(again).to.deep.equal(m);
  });

  it('round-trips any valid model (property)', () => {
    const arbFile = fc
      .record({
        n: fc.integer({ min: 0, max: 5 }),
        flatLines: fc.integer({ min: 0, max: 3 }),
        versions: fc.array(fc.record({ gapMin: fc.integer({ min: 1, max: 100_000 }), zones: fc.boolean(), seed: fc.array(fc.nat(2000), { minLength: 20, maxLength: 20 }) }), {
          minLength: 1,
          maxLength: 3,
        }),
        caps: fc.record({ daily: fc.option(fc.integer({ min: 1, max: 10_000 }), { nil: undefined }), weekly: fc.option(fc.integer({ min: 1, max: 50_000 }), { nil: undefined }) }),
        window: fc.integer({ min: 1, max: 600 }),
        repeat: fc.integer({ min: 0, max: 600 }),
        same: fc.record({ withinMinutes: fc.integer({ min: 0, max: 60 }), fare: fc.integer({ min: 0, max: 500 }) }),
        offset: fc.constantFrom('+08:00', '-03:30', '+00:00', '+05:45'),
        start: fc.constantFrom('00:00', '04:00', '23:59'),
        percent: fc.integer({ min: 0, max: 100 }),
        transferAmount: fc.integer({ min: 1, max: 500 }),
      })
      .filter((r) => r.n + r.flatLines > 0)
      .map((r): FareModelFile => {
        const ids = Array.from({ length: r.n }, (_, i) => `S${i}`);
        const flat = Array.from({ length: r.flatLines }, (_, i) => `B${i}`);
        let t = Date.parse('2026-01-01T00:00:00Z');
        return {
          currency: 'EUR',
          serviceDay: { start: r.start, utcOffset: r.offset },
          stations: ids.map((id, i) => ({ id, zone: i % 3 })),
          lines: [...(r.n > 0 ? [{ id: 'M', kind: 'METRO' as const, stations: ids }] : []), ...flat.map((id) => ({ id, kind: 'FLAT' as const }))],
          versions: r.versions.map((v, vi) => {
            t += v.gapMin * 60_000;
            const table: Record<string, Record<string, number>> = {};
            let k = 0;
            for (let a = 0; a < ids.length; a++) for (let b = a + 1; b < ids.length; b++) (table[ids[a]] ??= {})[ids[b]] = v.seed[k++ % 20];
            return {
              id: `v${vi}`,
              effectiveFrom: new Date(t).toISOString(),
              ...(r.n > 0 && { metro: v.zones ? { zones: { base: v.seed[0], perZoneCrossed: v.seed[1] } } : { table } }),
              flat: Object.fromEntries(flat.map((id, i) => [id, 1 + v.seed[i]])),
            };
          }),
          journeys: { incompleteWindowMinutes: r.window, repeatWindowSeconds: r.repeat, sameStation: r.same },
          transfers: [
            { from: 'FLAT', to: 'METRO', withinMinutes: 30, discount: { amount: r.transferAmount } },
            { from: 'METRO', to: 'FLAT', withinMinutes: 45, discount: { percent: r.percent } },
          ],
          caps: Object.fromEntries(Object.entries(r.caps).filter(([, v]) => v !== undefined)),
          concessions: { kid: { percentOff: r.percent, caps: { daily: 100 } }, old: { flatFare: r.transferAmount } },
        };
      });
    fc.assert(
      fc.property(arbFile, (file) => {
        const m = parseFareModel(file);
        expect(parseFareModel(JSON.parse(JSON.stringify(fareModelToFile(m))))).to.deep.equal(m);
      }),
      { numRuns: 200 },
    );
  });

  describe('names each problem with its path', () => {
    const cases: { name: string; change: (f: any) => void; path: string; message: RegExp }[] = [
      { name: 'an unknown station on a line', change: (f) => f.lines[0].stations.push('Z'), path: 'lines[0].stations[3]', message: /unknown station "Z"/ },
      { name: 'an unknown station in a table', change: (f) => (f.versions[0].metro.table.A.Z = 100), path: 'versions[0].metro.table.A.Z', message: /unknown station "Z"/ },
      { name: 'an unknown origin station in a table', change: (f) => (f.versions[0].metro.table.Q = { A: 100 }), path: 'versions[0].metro.table.Q', message: /unknown station "Q"/ },
      { name: 'a missing station pair', change: (f) => delete f.versions[0].metro.table.B, path: 'versions[0].metro.table', message: /missing the fare of the pair B-C/ },
      { name: 'a pair given twice', change: (f) => (f.versions[0].metro.table.C = { A: 400 }), path: 'versions[0].metro.table.C.A', message: /A is given twice|C-A is given twice/ },
      { name: "a station's fare to itself", change: (f) => (f.versions[0].metro.table.A.A = 0), path: 'versions[0].metro.table.A.A', message: /sameStation/ },
      { name: 'a negative fare', change: (f) => (f.versions[0].metro.table.A.B = -300), path: 'versions[0].metro.table.A.B', message: /must not be negative/ },
      { name: 'a fractional fare', change: (f) => (f.versions[0].flat.B1 = 2.5), path: 'versions[0].flat.B1', message: /whole number of minor units/ },
      { name: 'a fare given as text', change: (f) => (f.versions[0].flat.B1 = '200'), path: 'versions[0].flat.B1', message: /whole number of minor units/ },
      { name: 'a zero flat fare', change: (f) => (f.versions[0].flat.B1 = 0), path: 'versions[0].flat.B1', message: /must be positive/ },
      { name: 'a missing flat fare', change: (f) => delete f.versions[1].flat.B1, path: 'versions[1].flat', message: /missing the fare of FLAT line B1/ },
      { name: 'a flat fare for an unknown line', change: (f) => (f.versions[0].flat.B9 = 200), path: 'versions[0].flat.B9', message: /unknown line "B9"/ },
      { name: 'a flat fare for a metro line', change: (f) => (f.versions[0].flat.M1 = 200), path: 'versions[0].flat.M1', message: /METRO line/ },
      { name: 'a bad currency', change: (f) => (f.currency = 'XYZ'), path: 'currency', message: /ISO 4217 code.*"XYZ"/ },
      { name: 'a lower-case currency', change: (f) => (f.currency = 'cny'), path: 'currency', message: /ISO 4217/ },
      { name: 'unsorted versions', change: (f) => f.versions.reverse(), path: 'versions[1].effectiveFrom', message: /in order of effectiveFrom.*v1.*is not after v2/ },
      {
        name: 'two versions at the same moment (overlapping)',
        change: (f) => (f.versions[1].effectiveFrom = '2026-01-01T01:00:00+09:00'),
        path: 'versions[1].effectiveFrom',
        message: /no two at the same time/,
      },
      { name: 'a time with no offset', change: (f) => (f.versions[0].effectiveFrom = '2026-01-01 00:00'), path: 'versions[0].effectiveFrom', message: /ISO 8601 time with an offset/ },
      { name: 'a version id given twice', change: (f) => (f.versions[1].id = 'v1'), path: 'versions[1].id', message: /version v1 is listed twice/ },
      { name: 'no version', change: (f) => (f.versions = []), path: 'versions', message: /no fare version/ },
      { name: 'zones with a station that has none', change: (f) => delete f.stations[2].zone, path: 'stations[2].zone', message: /C has no zone, and version v2 prices the metro by zones/ },
      { name: 'no metro fares with stations', change: (f) => delete f.versions[0].metro, path: 'versions[0].metro', message: /no metro fares/ },
      { name: 'a station on no line', change: (f) => f.stations.push({ id: 'D', zone: 1 }), path: 'stations[3]', message: /D is on no METRO line/ },
      { name: 'a station listed twice', change: (f) => f.stations.push({ id: 'A', zone: 1 }), path: 'stations[3].id', message: /station A is listed twice/ },
      { name: 'a FLAT line with stations', change: (f) => (f.lines[1].stations = ['A']), path: 'lines[1].stations', message: /lists no stations/ },
      { name: 'a bad line kind', change: (f) => (f.lines[1].kind = 'BUS'), path: 'lines[1].kind', message: /"METRO" or "FLAT"/ },
      { name: 'a bad id', change: (f) => (f.lines[1].id = 'bus 1'), path: 'lines[1].id', message: /an id is 1-64/ },
      { name: 'an unknown key (a typo)', change: (f) => (f.cap = { daily: 100 }), path: '', message: /Unrecognized key.*cap/ },
      { name: 'a zero cap', change: (f) => (f.caps = { daily: 0 }), path: 'caps.daily', message: /must be positive/ },
      { name: 'a percent over 100', change: (f) => (f.concessions = { kid: { percentOff: 150 } }), path: 'concessions.kid.percentOff', message: /a percentage is 0-100/ },
      { name: 'a concession with two fares', change: (f) => (f.concessions = { kid: { percentOff: 50, flatFare: 100 } }), path: 'concessions.kid', message: /either "percentOff"/ },
      {
        name: 'a transfer discount of both kinds',
        change: (f) => (f.transfers = [{ from: 'FLAT', to: 'METRO', withinMinutes: 60, discount: { amount: 100, percent: 5 } }]),
        path: 'transfers[0].discount',
        message: /"amount".*or.*"percent"/,
      },
      {
        name: 'two transfer rules for one pair',
        change: (f) =>
          (f.transfers = [
            { from: 'FLAT', to: 'METRO', withinMinutes: 60, discount: { amount: 100 } },
            { from: 'FLAT', to: 'METRO', withinMinutes: 30, discount: { amount: 50 } },
          ]),
        path: 'transfers[1]',
        message: /a second rule from FLAT to METRO/,
      },
      { name: 'a bad service day start', change: (f) => (f.serviceDay = { start: '4am', utcOffset: '+08:00' }), path: 'serviceDay.start', message: /HH:MM/ },
      { name: 'a negative window', change: (f) => (f.journeys = { incompleteWindowMinutes: -5 }), path: 'journeys.incompleteWindowMinutes', message: /incompleteWindowMinutes must be at least 1/ },
      { name: 'a fractional repeat window', change: (f) => (f.journeys = { repeatWindowSeconds: 1.5 }), path: 'journeys.repeatWindowSeconds', message: /whole seconds/ },
      { name: 'a negative same-station fare', change: (f) => (f.journeys = { sameStation: { withinMinutes: 5, fare: -1 } }), path: 'journeys.sameStation.fare', message: /must not be negative/ },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const f = validFile();
        c.change(f);
        const found = problems(f);
        const hit = found.find((i) => i.path === c.path && c.message.test(i.message));
        expect(hit, `expected ${c.path}: ${c.message} among ${JSON.stringify(found)}`).to.not.equal(undefined);
      });
    }

    it('lists every problem at once, in the error message too', () => {
      const f = validFile();
      f.currency = 'XX';
      f.versions[0].metro.table.A.B = -1;
      delete f.versions[1].flat.B1;
      try {
        parseFareModel(f, 'fare model test.json');
        expect.fail('accepted');
      } catch (e) {
        // Shape errors are reported before meaning is checked, so the missing fare waits for the next run.
        expect((e as Error).message).to.match(/^fare model test.json is invalid:\n {2}currency: .*\n {2}versions\[0\]\.metro\.table\.A\.B: a fare must not be negative/);
      }
      const g = validFile();
      g.lines[0].stations.push('Z');
      delete g.versions[1].flat.B1;
      g.versions.reverse();
      expect(problems(g).map((i) => i.path)).to.have.members(['lines[0].stations[3]', 'versions[1].effectiveFrom', 'versions[0].flat']);
    });

    it('names the file when it is not JSON', () => {
      const dir = mkdtempSync(join(tmpdir(), 'fares-'));
      const path = join(dir, 'fares.json');
      writeFileSync(path, '{"currency": "CNY",');
      expect(() => readFareModelFile(path)).to.throw(new RegExp(`^fare model ${path}: .*JSON`));
      writeFileSync(path, JSON.stringify({ ...validFile(), currency: 'EURO' }));
      expect(() => readFareModelFile(path)).to.throw(FareModelError, new RegExp(`fare model ${path} is invalid:\\n  currency: currency must be an ISO 4217 code`));
    });
  });
});
