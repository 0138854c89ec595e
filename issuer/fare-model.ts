// The fare model an operator loads: stations and lines, fare-table versions
// (metro station-to-station or by zones, flat fares per bus line), the journey
// rules (incomplete-journey window, same-station exits, repeated taps),
// interchange discounts, daily and weekly caps, and concession profiles.
// The file format is documented in docs/fares.md; parseFareModel checks the
// shape with zod, then the meaning (unknown stations, missing pairs, version
// order), and reports every problem with its path in the file.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseClockTime, parseUtcOffset, type ServiceDayConfig } from './service-day.js';

export type JourneyKind = 'METRO' | 'FLAT';

export interface Station {
  id: string;
  name?: string;
  /** The station's fare zone, needed when a version prices the metro by zones. */
  zone?: number;
}

export interface Line {
  id: string;
  name?: string;
  /** METRO lines are entered and left at stations; FLAT lines (buses) charge one fare per ride. */
  kind: JourneyKind;
  /** The stations of a METRO line, in order; empty for a FLAT line. */
  stations: string[];
}

/** Metro fares of one version: a station-to-station table, or zones. */
export type MetroFares =
  | { kind: 'TABLE'; /** pairKey(a, b) -> fare; symmetric, every pair of distinct stations. */ fares: Map<string, bigint> }
  | { kind: 'ZONES'; base: bigint; perZoneCrossed: bigint };

export interface FareVersion {
  id: string;
  /** Journeys that start at or after this moment (epoch ms) are charged by this version. */
  effectiveFromMs: number;
  /** The text the file gave, kept so a round trip writes the same offset. */
  effectiveFrom: string;
  metro?: MetroFares;
  /** FLAT line id -> fare per ride. */
  flat: Map<string, bigint>;
}

export type Discount = { amount: bigint } | { percent: number };

export interface TransferRule {
  from: JourneyKind;
  to: JourneyKind;
  /** Most time from the end of the earlier journey to the start of the later one. */
  withinMs: number;
  /** Taken off the later journey's fare (never more than that fare). */
  discount: Discount;
}

export interface Caps {
  /** Most a card pays per service day; none when undefined. */
  daily?: bigint;
  /** Most a card pays per ISO week (Monday first) of service days; none when undefined. */
  weekly?: bigint;
}

export type ConcessionFare = { percentOff: number } | { flatFare: bigint };

export interface Concession {
  id: string;
  fare: ConcessionFare;
  /** Replace the model's caps, field by field. */
  caps: Caps;
}

export interface JourneyRules {
  /** An entry with no exit within this time (or an exit with no entry) is incomplete. */
  incompleteWindowMs: number;
  /** Two entries at one station, or two rides on one FLAT line, this close together are one. */
  repeatWindowMs: number;
  /** Entry and exit at one station within withinMs cost `fare`; later, the maximum fare from it. */
  sameStation: { withinMs: number; fare: bigint };
}

export interface FareModel {
  currency: string;
  serviceDay: ServiceDayConfig;
  stations: Map<string, Station>;
  lines: Map<string, Line>;
  /** Sorted by effectiveFromMs, strictly increasing. */
  versions: FareVersion[];
  rules: JourneyRules;
  transfers: TransferRule[];
  caps: Caps;
  concessions: Map<string, Concession>;
}

export const DEFAULT_RULES = {
  incompleteWindowMinutes: 180,
  repeatWindowSeconds: 60,
  sameStation: { withinMinutes: 20, fare: 0 },
} as const;

/** The issuer's default service day (ISSUER_SERVICE_DAY_START, ISSUER_UTC_OFFSET). */
export const DEFAULT_SERVICE_DAY = { start: '04:00', utcOffset: '+08:00' } as const;

// ---- The file's shape ----

const ID = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, { error: "an id is 1-64 letters, digits, '.', '_', '-'" });
const money = (what: string) =>
  z
    .number({ error: `${what} must be a whole number of minor units` })
    .int({ error: `${what} must be a whole number of minor units` })
    .min(0, { error: `${what} must not be negative` })
    .max(Number.MAX_SAFE_INTEGER, { error: `${what} is too large` });
const positiveMoney = (what: string) => money(what).min(1, { error: `${what} must be positive` });
const minutes = (what: string, least = 0) =>
  z
    .number({ error: `${what} must be a number of minutes` })
    .int({ error: `${what} must be whole minutes` })
    .min(least, { error: least === 0 ? `${what} must not be negative` : `${what} must be at least ${least}` })
    .max(100_000, { error: `${what} must be at most 100000` });
const percent = z
  .number({ error: 'a percentage must be a number' })
  .int({ error: 'a percentage must be a whole number' })
  .min(0, { error: 'a percentage is 0-100' })
  .max(100, { error: 'a percentage is 0-100' });
const kind = z.enum(['METRO', 'FLAT'], { error: 'kind must be "METRO" or "FLAT"' });
const capsSchema = z.strictObject({ daily: positiveMoney('a cap').optional(), weekly: positiveMoney('a cap').optional() });

const fileSchema = z.strictObject({
  currency: z.string().refine((c) => /^[A-Z]{3}$/.test(c) && Intl.supportedValuesOf('currency').includes(c), {
    error: (i) => `currency must be an ISO 4217 code such as "CNY", got ${JSON.stringify(i.input)}`,
  }),
  serviceDay: z
    .strictObject({
      start: z.string().refine(ok(parseClockTime), { error: 'start must be a local time "HH:MM"' }),
      utcOffset: z.string().refine(ok(parseUtcOffset), { error: 'utcOffset must look like "+08:00"' }),
    })
    .optional(),
  stations: z
    .array(z.strictObject({ id: ID, name: z.string().optional(), zone: z.number({ error: 'a zone is a whole number 0-1000' }).int({ error: 'a zone is a whole number 0-1000' }).min(0, { error: 'a zone is a whole number 0-1000' }).max(1000, { error: 'a zone is a whole number 0-1000' }).optional() }))
    .default([]),
  lines: z
    .array(z.strictObject({ id: ID, name: z.string().optional(), kind, stations: z.array(z.string()).optional() }))
    .min(1, { error: 'the model names no line' }),
  versions: z
    .array(
      z.strictObject({
        id: ID,
        effectiveFrom: z.iso.datetime({ offset: true, error: 'effectiveFrom must be an ISO 8601 time with an offset, e.g. "2026-07-01T04:00:00+08:00"' }),
        metro: z
          .union(
            [
              z.strictObject({ table: z.record(z.string(), z.record(z.string(), money('a fare'))) }),
              z.strictObject({ zones: z.strictObject({ base: money('a base fare'), perZoneCrossed: money('a per-zone fare') }) }),
            ],
            { error: 'metro must be {"table": {...}} or {"zones": {"base": ..., "perZoneCrossed": ...}}' },
          )
          .optional(),
        flat: z.record(z.string(), positiveMoney('a flat fare')).default({}),
      }),
    )
    .min(1, { error: 'the model has no fare version' }),
  journeys: z
    .strictObject({
      incompleteWindowMinutes: minutes('incompleteWindowMinutes', 1).optional(),
      repeatWindowSeconds: z
        .number({ error: 'repeatWindowSeconds must be whole seconds, 0-86400' })
        .int({ error: 'repeatWindowSeconds must be whole seconds, 0-86400' })
        .min(0, { error: 'repeatWindowSeconds must be whole seconds, 0-86400' })
        .max(86_400, { error: 'repeatWindowSeconds must be whole seconds, 0-86400' })
        .optional(),
      sameStation: z.strictObject({ withinMinutes: minutes('withinMinutes'), fare: money('the same-station fare') }).optional(),
    })
    .optional(),
  transfers: z
    .array(
      z.strictObject({
        from: kind,
        to: kind,
        withinMinutes: minutes('withinMinutes'),
        discount: z.union([z.strictObject({ amount: positiveMoney('a discount') }), z.strictObject({ percent })], {
          error: 'discount must be {"amount": <minor units>} or {"percent": 0-100}',
        }),
      }),
    )
    .default([]),
  caps: capsSchema.optional(),
  concessions: z
    .record(
      ID,
      z.union(
        [
          z.strictObject({ percentOff: percent, caps: capsSchema.optional() }),
          z.strictObject({ flatFare: money('a flat fare'), caps: capsSchema.optional() }),
        ],
        { error: 'a concession has either "percentOff" (0-100) or "flatFare" (minor units), and optional "caps"' },
      ),
    )
    .default({}),
});

/** The model file as JSON (docs/fares.md). */
export type FareModelFile = z.input<typeof fileSchema>;

function ok(parse: (s: string) => unknown) {
  return (s: string) => {
    try {
      parse(s);
      return true;
    } catch {
      return false;
    }
  };
}

// ---- Errors ----

export interface FareModelIssue {
  /** Where in the file, e.g. "versions[1].metro.table.A.C". */
  path: string;
  message: string;
}

export class FareModelError extends Error {
  constructor(
    readonly issues: FareModelIssue[],
    source = 'fare model',
  ) {
    super(`${source} is invalid:\n${issues.map((i) => `  ${i.path || '(top)'}: ${i.message}`).join('\n')}`);
    this.name = 'FareModelError';
  }
}

function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

// ---- Parsing ----

/** The unordered pair's key in a TABLE's map. */
export function pairKey(a: string, b: string): string {
  return a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`;
}

/** Parses and checks a model (the parsed JSON of a file); throws FareModelError listing every problem. */
export function parseFareModel(json: unknown, source?: string): FareModel {
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    throw new FareModelError(
      parsed.error.issues.map((i) => ({ path: pathText(i.path), message: i.message })),
      source,
    );
  }
  const f = parsed.data;
  const issues: FareModelIssue[] = [];
  const issue = (path: string, message: string) => issues.push({ path, message });

  const stations = new Map<string, Station>();
  f.stations.forEach((s, i) => {
    if (stations.has(s.id)) issue(`stations[${i}].id`, `station ${s.id} is listed twice`);
    stations.set(s.id, { id: s.id, ...(s.name !== undefined && { name: s.name }), ...(s.zone !== undefined && { zone: s.zone }) });
  });

  const lines = new Map<string, Line>();
  const onALine = new Set<string>();
  f.lines.forEach((l, i) => {
    if (lines.has(l.id)) issue(`lines[${i}].id`, `line ${l.id} is listed twice`);
    const lineStations = l.stations ?? [];
    if (l.kind === 'FLAT' && lineStations.length > 0) issue(`lines[${i}].stations`, `FLAT line ${l.id} charges per ride and lists no stations`);
    if (l.kind === 'METRO' && lineStations.length === 0) issue(`lines[${i}].stations`, `METRO line ${l.id} lists no station`);
    const seen = new Set<string>();
    lineStations.forEach((s, j) => {
      if (!stations.has(s)) issue(`lines[${i}].stations[${j}]`, `unknown station ${JSON.stringify(s)}`);
      if (seen.has(s)) issue(`lines[${i}].stations[${j}]`, `station ${s} is listed twice on line ${l.id}`);
      seen.add(s);
      onALine.add(s);
    });
    lines.set(l.id, { id: l.id, ...(l.name !== undefined && { name: l.name }), kind: l.kind, stations: lineStations });
  });
  f.stations.forEach((s, i) => {
    if (!onALine.has(s.id)) issue(`stations[${i}]`, `station ${s.id} is on no METRO line`);
  });
  const flatLines = [...lines.values()].filter((l) => l.kind === 'FLAT').map((l) => l.id);
  const stationIds = [...stations.keys()];

  const versions: FareVersion[] = [];
  const versionIds = new Set<string>();
  f.versions.forEach((v, i) => {
    const at = `versions[${i}]`;
    if (versionIds.has(v.id)) issue(`${at}.id`, `version ${v.id} is listed twice`);
    versionIds.add(v.id);
    const effectiveFromMs = Date.parse(v.effectiveFrom);
    const prev = versions[versions.length - 1];
    if (prev && effectiveFromMs <= prev.effectiveFromMs) {
      issue(`${at}.effectiveFrom`, `versions must be in order of effectiveFrom with no two at the same time: ${v.id} (${v.effectiveFrom}) is not after ${prev.id} (${prev.effectiveFrom})`);
    }

    let metro: MetroFares | undefined;
    if (v.metro && 'table' in v.metro) {
      const fares = new Map<string, bigint>();
      for (const [from, row] of Object.entries(v.metro.table)) {
        if (!stations.has(from)) issue(`${at}.metro.table.${from}`, `unknown station ${JSON.stringify(from)}`);
        for (const [to, fare] of Object.entries(row)) {
          const p = `${at}.metro.table.${from}.${to}`;
          if (!stations.has(to)) issue(p, `unknown station ${JSON.stringify(to)}`);
          else if (from === to) issue(p, `a station's fare to itself is set by journeys.sameStation, not the table`);
          else if (fares.has(pairKey(from, to))) issue(p, `the pair ${from}-${to} is given twice (a table is symmetric: give each pair once)`);
          else fares.set(pairKey(from, to), BigInt(fare));
        }
      }
      const missing: string[] = [];
      for (let a = 0; a < stationIds.length; a++) {
        for (let b = a + 1; b < stationIds.length; b++) {
          if (!fares.has(pairKey(stationIds[a], stationIds[b]))) missing.push(`${stationIds[a]}-${stationIds[b]}`);
        }
      }
      if (missing.length > 0) {
        const shown = missing.slice(0, 10).join(', ') + (missing.length > 10 ? ` and ${missing.length - 10} more` : '');
        issue(`${at}.metro.table`, `missing the fare of ${missing.length === 1 ? 'the pair' : `${missing.length} pairs`} ${shown}`);
      }
      metro = { kind: 'TABLE', fares };
    } else if (v.metro) {
      f.stations.forEach((s, j) => {
        if (s.zone === undefined) issue(`stations[${j}].zone`, `station ${s.id} has no zone, and version ${v.id} prices the metro by zones`);
      });
      metro = { kind: 'ZONES', base: BigInt(v.metro.zones.base), perZoneCrossed: BigInt(v.metro.zones.perZoneCrossed) };
    } else if (stations.size > 0) {
      issue(`${at}.metro`, `version ${v.id} has no metro fares, and the model has stations`);
    }

    const flat = new Map<string, bigint>();
    for (const [line, fare] of Object.entries(v.flat)) {
      const l = lines.get(line);
      if (!l) issue(`${at}.flat.${line}`, `unknown line ${JSON.stringify(line)}`);
      else if (l.kind !== 'FLAT') issue(`${at}.flat.${line}`, `line ${line} is a METRO line; its fares are in "metro"`);
      else flat.set(line, BigInt(fare));
    }
    for (const line of flatLines) if (!flat.has(line)) issue(`${at}.flat`, `missing the fare of FLAT line ${line}`);

    versions.push({ id: v.id, effectiveFromMs, effectiveFrom: v.effectiveFrom, ...(metro && { metro }), flat });
  });

  const j = f.journeys ?? {};
  const sameStation = j.sameStation ?? DEFAULT_RULES.sameStation;
  const rules: JourneyRules = {
    incompleteWindowMs: (j.incompleteWindowMinutes ?? DEFAULT_RULES.incompleteWindowMinutes) * 60_000,
    repeatWindowMs: (j.repeatWindowSeconds ?? DEFAULT_RULES.repeatWindowSeconds) * 1000,
    sameStation: { withinMs: sameStation.withinMinutes * 60_000, fare: BigInt(sameStation.fare) },
  };

  const transfers: TransferRule[] = f.transfers.map((t, i) => {
    if (f.transfers.slice(0, i).some((o) => o.from === t.from && o.to === t.to)) issue(`transfers[${i}]`, `a second rule from ${t.from} to ${t.to}`);
    return { from: t.from, to: t.to, withinMs: t.withinMinutes * 60_000, discount: 'amount' in t.discount ? { amount: BigInt(t.discount.amount) } : { percent: t.discount.percent } };
  });

  const concessions = new Map<string, Concession>();
  for (const [id, c] of Object.entries(f.concessions)) {
    concessions.set(id, { id, fare: 'percentOff' in c ? { percentOff: c.percentOff } : { flatFare: BigInt(c.flatFare) }, caps: toCaps(c.caps) });
  }

  if (issues.length > 0) throw new FareModelError(issues, source);
  const sd = f.serviceDay ?? DEFAULT_SERVICE_DAY;
  return {
    currency: f.currency,
    serviceDay: { dayStartMinutes: parseClockTime(sd.start), utcOffsetMinutes: parseUtcOffset(sd.utcOffset) },
    stations,
    lines,
    versions,
    rules,
    transfers,
    caps: toCaps(f.caps),
    concessions,
  };
}

function toCaps(c: { daily?: number; weekly?: number } | undefined): Caps {
  return { ...(c?.daily !== undefined && { daily: BigInt(c.daily) }), ...(c?.weekly !== undefined && { weekly: BigInt(c.weekly) }) };
}

/** Reads and checks a model file; errors name the file and each problem's path in it. */
export function readFareModelFile(path: string): FareModel {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`fare model ${path}: ${(e as Error).message}`);
  }
  return parseFareModel(json, `fare model ${path}`);
}

// ---- Writing ----

const minutesOf = (ms: number) => ms / 60_000;
const num = (v: bigint) => Number(v);
const capsFile = (c: Caps) => ({ ...(c.daily !== undefined && { daily: num(c.daily) }), ...(c.weekly !== undefined && { weekly: num(c.weekly) }) });
const clock = (m: number) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
const offset = (m: number) => `${m < 0 ? '-' : '+'}${clock(Math.abs(m))}`;

/** The model as a file that parseFareModel reads back to an equal model. */
export function fareModelToFile(m: FareModel): FareModelFile {
  const stationIds = [...m.stations.keys()];
  return {
    currency: m.currency,
    serviceDay: { start: clock(m.serviceDay.dayStartMinutes), utcOffset: offset(m.serviceDay.utcOffsetMinutes) },
    stations: [...m.stations.values()].map((s) => ({ ...s })),
    lines: [...m.lines.values()].map((l) => ({ id: l.id, ...(l.name !== undefined && { name: l.name }), kind: l.kind, ...(l.kind === 'METRO' && { stations: [...l.stations] }) })),
    versions: m.versions.map((v) => {
      let metro: FareModelFile['versions'][number]['metro'];
      if (v.metro?.kind === 'ZONES') metro = { zones: { base: num(v.metro.base), perZoneCrossed: num(v.metro.perZoneCrossed) } };
      else if (v.metro?.kind === 'TABLE') {
        const table: Record<string, Record<string, number>> = {};
        for (let a = 0; a < stationIds.length; a++) {
          for (let b = a + 1; b < stationIds.length; b++) {
            (table[stationIds[a]] ??= {})[stationIds[b]] = num(v.metro.fares.get(pairKey(stationIds[a], stationIds[b]))!);
          }
        }
        metro = { table };
      }
      return { id: v.id, effectiveFrom: v.effectiveFrom, ...(metro && { metro }), flat: Object.fromEntries([...v.flat].map(([k, x]) => [k, num(x)])) };
    }),
    journeys: {
      incompleteWindowMinutes: minutesOf(m.rules.incompleteWindowMs),
      repeatWindowSeconds: m.rules.repeatWindowMs / 1000,
      sameStation: { withinMinutes: minutesOf(m.rules.sameStation.withinMs), fare: num(m.rules.sameStation.fare) },
    },
    transfers: m.transfers.map((t) => ({
      from: t.from,
      to: t.to,
      withinMinutes: minutesOf(t.withinMs),
      discount: 'amount' in t.discount ? { amount: num(t.discount.amount) } : { percent: t.discount.percent },
    })),
    caps: capsFile(m.caps),
    concessions: Object.fromEntries(
      [...m.concessions.values()].map((c) => [c.id, { ...('percentOff' in c.fare ? { percentOff: c.fare.percentOff } : { flatFare: num(c.fare.flatFare) }), caps: capsFile(c.caps) }]),
    ),
  };
}

// ---- The simplest configuration ----

/**
 * Today's setup as a model: one flat fare per line and an optional daily cap.
 * Every line is FLAT, so each tap is one ride at its line's fare.
 */
export function flatFareModel(opts: {
  currency: string;
  /** Line id -> fare in minor units. */
  lines: ReadonlyMap<string, bigint>;
  dailyCapMinor?: bigint;
  serviceDay: ServiceDayConfig;
}): FareModel {
  const file: FareModelFile = {
    currency: opts.currency,
    serviceDay: { start: clock(opts.serviceDay.dayStartMinutes), utcOffset: offset(opts.serviceDay.utcOffsetMinutes) },
    lines: [...opts.lines.keys()].map((id) => ({ id, kind: 'FLAT' as const })),
    versions: [{ id: 'flat', effectiveFrom: '1970-01-01T00:00:00Z', flat: Object.fromEntries([...opts.lines].map(([k, v]) => [k, num(v)])) }],
    ...(opts.dailyCapMinor !== undefined && { caps: { daily: num(opts.dailyCapMinor) } }),
  };
  return parseFareModel(file, 'flat fare model');
}

// ---- Fares of one version ----

/** The version in force at atMs: the last that took effect at or before it (the first version for earlier moments). */
export function versionAt(m: FareModel, atMs: number): FareVersion {
  let found = m.versions[0];
  for (const v of m.versions) {
    if (v.effectiveFromMs <= atMs) found = v;
    else break;
  }
  return found;
}

/** The metro fare between two distinct stations under a version. */
export function metroFare(m: FareModel, v: FareVersion, from: string, to: string): bigint {
  const metro = v.metro;
  if (!metro) throw new Error(`fare version ${v.id} has no metro fares`);
  if (metro.kind === 'ZONES') {
    const za = m.stations.get(from)?.zone;
    const zb = m.stations.get(to)?.zone;
    if (za === undefined || zb === undefined) throw new Error(`no zone for ${za === undefined ? from : to}`);
    return metro.base + metro.perZoneCrossed * BigInt(Math.abs(za - zb));
  }
  const fare = metro.fares.get(pairKey(from, to));
  if (fare === undefined) throw new Error(`fare version ${v.id} has no fare between ${from} and ${to}`);
  return fare;
}

const maxima = new WeakMap<FareVersion, Map<string, bigint>>();

/** The highest fare of a journey from (or, the table being symmetric, to) a station under a version. */
export function maximumFare(m: FareModel, v: FareVersion, station: string): bigint {
  let known = maxima.get(v);
  if (!known) maxima.set(v, (known = new Map()));
  let max = known.get(station);
  if (max === undefined) {
    max = 0n;
    for (const other of m.stations.keys()) {
      if (other === station) continue;
      const fare = metroFare(m, v, station, other);
      if (fare > max) max = fare;
    }
    known.set(station, max);
  }
  return max;
}
