// The fare engine: from all the taps of one card known so far, the card's
// journeys and what each costs under a fare model (fare-model.ts). Pure: the
// result depends only on the set of taps, the model, the card's concession
// profile and `now`, never on the order the taps arrived in. The rules and the
// policy choices are in docs/fares.md.
import {
  maximumFare,
  metroFare,
  versionAt,
  type Caps,
  type Concession,
  type FareModel,
  type JourneyKind,
  type TransferRule,
} from './fare-model.js';
import { serviceDay } from './service-day.js';

export type TapKind = 'ENTRY' | 'EXIT' | 'FLAT';

/** One tap as the engine needs it. */
export interface FareTap {
  tapId: string;
  /** When the card was presented (epoch ms, the terminal's clock). */
  atMs: number;
  /** ENTRY / EXIT at a metro gate (stationId), FLAT on a bus or validator (lineId). */
  kind: TapKind;
  stationId?: string;
  lineId?: string;
  /** Set by a terminal that recognised a repeated presentation of an accepted tap: never charged. */
  repeatOfTapId?: string;
}

export type JourneyStatus =
  /** Priced: an entry with its exit, or a FLAT ride. */
  | 'COMPLETE'
  /** An unmatched entry or exit still inside the incomplete-journey window: not charged yet. */
  | 'OPEN'
  /** An unmatched entry or exit past the window: charged the maximum fare from (to) its station. */
  | 'INCOMPLETE';

export type TapRole = 'ENTRY' | 'EXIT' | 'RIDE' | 'REPEAT';

export interface JourneyTap extends FareTap {
  role: TapRole;
  /** For a REPEAT: the tap it repeats (the one that counts, or the terminal's repeatOfTapId). */
  repeatOf?: string;
}

export type FareBasis =
  /** The fare between the entry and exit stations (table or zones). */
  | 'STATIONS'
  /** Entry and exit at one station within journeys.sameStation.withinMinutes. */
  | 'SAME_STATION'
  /** Entry and exit at one station later than that: the maximum fare from it. */
  | 'SAME_STATION_OVERSTAY'
  /** An entry with no exit: the maximum fare from the entry station. */
  | 'MAX_FROM_ENTRY'
  /** An exit with no entry: the maximum fare to the exit station. */
  | 'MAX_TO_EXIT'
  /** A ride on a FLAT line. */
  | 'FLAT_LINE'
  /** OPEN: not priced yet. */
  | 'PENDING';

export type DiscountKind = 'TRANSFER' | 'CONCESSION' | 'DAILY_CAP' | 'WEEKLY_CAP';

export interface AppliedDiscount {
  kind: DiscountKind;
  /** Minor units taken off, > 0. */
  amount: bigint;
  /** What gave it, for the rider and ops (e.g. "daily cap 1500 on 2026-03-02"). */
  detail: string;
}

export interface PricedJourney {
  /** The tap id of its entry (or of its exit when it has no entry, or of the ride). Every tap id it holds is listed in taps. */
  id: string;
  kind: JourneyKind;
  status: JourneyStatus;
  /** Every tap of the journey, repeats included, in (time, tap id) order. */
  taps: JourneyTap[];
  entryStationId?: string;
  exitStationId?: string;
  lineId?: string;
  /** The entry's (or exit's, or ride's) time: it picks the fare version and the service day. */
  startMs: number;
  /** The exit's or ride's time; none for an entry with no exit. */
  endMs?: number;
  serviceDay: string;
  /** ISO week of the service day, "2026-W10". */
  isoWeek: string;
  /** The id of the fare version in force when the journey started. */
  fareVersion: string;
  fareBasis: FareBasis;
  /** The fare before any discount (0 while OPEN). */
  nominal: bigint;
  /** In the order applied: transfer, concession, daily cap, weekly cap. */
  discounts: AppliedDiscount[];
  /** nominal minus the discounts. */
  charged: bigint;
}

export interface FarePricing {
  currency: string;
  /** In (start, id) order. */
  journeys: PricedJourney[];
  /** Taps with a repeatOfTapId whose first tap is not known (yet): never charged. */
  unlinkedRepeats: FareTap[];
}

export class FareEngineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FareEngineError';
  }
}

/** Why the model cannot price this tap, or undefined when it can (for checking taps as they are taken in). */
export function tapProblem(model: FareModel, tap: FareTap): string | undefined {
  if (typeof tap.tapId !== 'string' || tap.tapId === '') return 'a tap needs a tap id';
  if (!Number.isSafeInteger(tap.atMs)) return `tap ${tap.tapId}: time must be whole epoch milliseconds`;
  if (tap.repeatOfTapId === tap.tapId) return `tap ${tap.tapId} cannot repeat itself`;
  if (tap.kind === 'ENTRY' || tap.kind === 'EXIT') {
    if (tap.stationId === undefined || !model.stations.has(tap.stationId)) return `tap ${tap.tapId}: unknown station ${JSON.stringify(tap.stationId)}`;
    return undefined;
  }
  if (tap.kind === 'FLAT') {
    const line = tap.lineId === undefined ? undefined : model.lines.get(tap.lineId);
    if (!line) return `tap ${tap.tapId}: unknown line ${JSON.stringify(tap.lineId)}`;
    if (line.kind !== 'FLAT') return `tap ${tap.tapId}: line ${line.id} is a METRO line; its taps are ENTRY or EXIT at a station`;
    return undefined;
  }
  return `tap ${tap.tapId}: kind must be ENTRY, EXIT or FLAT`;
}

const byTime = (a: FareTap, b: FareTap) => a.atMs - b.atMs || (a.tapId < b.tapId ? -1 : a.tapId > b.tapId ? 1 : 0);

interface Draft {
  kind: JourneyKind;
  taps: JourneyTap[];
  entry?: FareTap;
  exit?: FareTap;
  ride?: FareTap;
}

const draftId = (d: Draft) => (d.entry ?? d.exit ?? d.ride)!.tapId;
const draftStart = (d: Draft) => (d.entry ?? d.exit ?? d.ride)!.atMs;

/** The set of taps, each once (the same tap reported twice is one; two different taps under one id are an error). */
function distinct(taps: readonly FareTap[]): FareTap[] {
  const byId = new Map<string, FareTap>();
  for (const t of taps) {
    const seen = byId.get(t.tapId);
    if (!seen) byId.set(t.tapId, t);
    else if (seen.atMs !== t.atMs || seen.kind !== t.kind || seen.stationId !== t.stationId || seen.lineId !== t.lineId || seen.repeatOfTapId !== t.repeatOfTapId) {
      throw new FareEngineError(`tap id ${t.tapId} is used by two different taps`);
    }
  }
  return [...byId.values()];
}

/** Groups the taps into journeys (pairing, repeats), without prices. */
function journeysOf(model: FareModel, taps: FareTap[]): { drafts: Draft[]; unlinked: FareTap[] } {
  const { incompleteWindowMs, repeatWindowMs } = model.rules;
  const counted = taps.filter((t) => t.repeatOfTapId === undefined).sort(byTime);
  const drafts: Draft[] = [];
  let pending: Draft | undefined; // the latest entry, while it may still get its exit
  const lastRide = new Map<string, Draft>(); // FLAT line -> its latest ride

  for (const tap of counted) {
    if (tap.kind === 'FLAT') {
      pending = undefined; // a ride between an entry and an exit means the rider left the metro without tapping out
      const ride = lastRide.get(tap.lineId!);
      if (ride && tap.atMs - ride.ride!.atMs <= repeatWindowMs) {
        ride.taps.push({ ...tap, role: 'REPEAT', repeatOf: ride.ride!.tapId });
        continue;
      }
      const d: Draft = { kind: 'FLAT', ride: tap, taps: [{ ...tap, role: 'RIDE' }] };
      drafts.push(d);
      lastRide.set(tap.lineId!, d);
    } else if (tap.kind === 'ENTRY') {
      const first = pending?.entry;
      if (pending && first && first.stationId === tap.stationId && tap.atMs - first.atMs <= repeatWindowMs) {
        // Re-entry at the same station: the later entry replaces the earlier, which becomes its repeat.
        for (const jt of pending.taps) {
          if (jt.tapId === first.tapId) {
            jt.role = 'REPEAT';
            jt.repeatOf = tap.tapId;
          }
        }
        pending.entry = tap;
        pending.taps.push({ ...tap, role: 'ENTRY' });
        continue;
      }
      pending = { kind: 'METRO', entry: tap, taps: [{ ...tap, role: 'ENTRY' }] };
      drafts.push(pending);
    } else {
      if (pending && tap.atMs - pending.entry!.atMs <= incompleteWindowMs) {
        pending.exit = tap;
        pending.taps.push({ ...tap, role: 'EXIT' });
      } else {
        drafts.push({ kind: 'METRO', exit: tap, taps: [{ ...tap, role: 'EXIT' }] });
      }
      pending = undefined;
    }
  }

  // Terminal-marked repeats join the journey of the tap they repeat (through chains of repeats).
  const owner = new Map<string, Draft>();
  for (const d of drafts) for (const t of d.taps) owner.set(t.tapId, d);
  let waiting = taps.filter((t) => t.repeatOfTapId !== undefined).sort(byTime);
  for (let progress = true; progress && waiting.length > 0; ) {
    progress = false;
    const still: FareTap[] = [];
    for (const t of waiting) {
      const d = owner.get(t.repeatOfTapId!);
      if (!d) {
        still.push(t);
        continue;
      }
      d.taps.push({ ...t, role: 'REPEAT', repeatOf: t.repeatOfTapId });
      owner.set(t.tapId, d);
      progress = true;
    }
    waiting = still;
  }
  for (const d of drafts) d.taps.sort(byTime);
  drafts.sort((a, b) => draftStart(a) - draftStart(b) || (draftId(a) < draftId(b) ? -1 : 1));
  return { drafts, unlinked: waiting };
}

/** "2026-03-02" -> "2026-W10" (ISO 8601 week: Monday first, week 1 holds the year's first Thursday). */
export function isoWeekOf(day: string): string {
  const d = new Date(`${day}T00:00:00Z`);
  const mondayBased = (d.getUTCDay() + 6) % 7;
  const thursday = new Date(d.getTime() + (3 - mondayBased) * 86_400_000);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** percent of amount, rounded half up (to the rider's benefit at exactly half a minor unit). */
function percentOf(amount: bigint, percent: number): bigint {
  return (amount * BigInt(percent) + 50n) / 100n;
}

function concessionOf(model: FareModel, profile: string | undefined): Concession | undefined {
  if (profile === undefined || profile === '') return undefined;
  const c = model.concessions.get(profile);
  if (!c) throw new FareEngineError(`unknown concession profile ${JSON.stringify(profile)} (the model has: ${[...model.concessions.keys()].join(', ') || 'none'})`);
  return c;
}

const minutes = (ms: number) => `${ms / 60_000} min`;

/**
 * The card's journeys and their fares.
 * @param profile the card's concession profile id (undefined or '' for none)
 * @param taps every tap of the card known so far, in any order
 * @param nowMs decides which unmatched taps are still OPEN
 */
export function priceJourneys(input: { model: FareModel; profile?: string; taps: readonly FareTap[]; nowMs: number }): FarePricing {
  const { model, nowMs } = input;
  const concession = concessionOf(model, input.profile);
  const taps = distinct(input.taps);
  for (const t of taps) {
    const problem = tapProblem(model, t);
    if (problem) throw new FareEngineError(problem);
  }
  const { drafts, unlinked } = journeysOf(model, taps);
  const { incompleteWindowMs, sameStation } = model.rules;
  const caps: Caps = { ...model.caps, ...concession?.caps };
  const dailyUsed = new Map<string, bigint>();
  const weeklyUsed = new Map<string, bigint>();

  const journeys: PricedJourney[] = [];
  for (const d of drafts) {
    const startMs = draftStart(d);
    const endMs = d.kind === 'FLAT' ? d.ride!.atMs : d.exit?.atMs;
    const day = serviceDay(startMs, model.serviceDay);
    const version = versionAt(model, startMs);

    let status: JourneyStatus = 'COMPLETE';
    let basis: FareBasis;
    let nominal = 0n;
    if (d.kind === 'FLAT') {
      basis = 'FLAT_LINE';
      nominal = version.flat.get(d.ride!.lineId!)!;
    } else if (d.entry && d.exit) {
      const from = d.entry.stationId!;
      const to = d.exit.stationId!;
      if (from !== to) {
        basis = 'STATIONS';
        nominal = metroFare(model, version, from, to);
      } else if (d.exit.atMs - d.entry.atMs <= sameStation.withinMs) {
        basis = 'SAME_STATION';
        nominal = sameStation.fare;
      } else {
        basis = 'SAME_STATION_OVERSTAY';
        nominal = maximumFare(model, version, from);
      }
    } else {
      const only = (d.entry ?? d.exit)!;
      if (nowMs <= only.atMs + incompleteWindowMs) {
        status = 'OPEN';
        basis = 'PENDING';
      } else {
        status = 'INCOMPLETE';
        basis = d.entry ? 'MAX_FROM_ENTRY' : 'MAX_TO_EXIT';
        nominal = maximumFare(model, version, only.stationId!);
      }
    }

    const j: PricedJourney = {
      id: draftId(d),
      kind: d.kind,
      status,
      taps: d.taps,
      ...(d.entry && { entryStationId: d.entry.stationId }),
      ...(d.exit && { exitStationId: d.exit.stationId }),
      ...(d.ride && { lineId: d.ride.lineId }),
      startMs,
      ...(endMs !== undefined && { endMs }),
      serviceDay: day,
      isoWeek: isoWeekOf(day),
      fareVersion: version.id,
      fareBasis: basis,
      nominal,
      discounts: [],
      charged: 0n,
    };

    if (status !== 'OPEN') {
      let amount = nominal;
      const take = (kind: DiscountKind, off: bigint, detail: string) => {
        if (off > amount) off = amount;
        if (off <= 0n) return;
        j.discounts.push({ kind, amount: off, detail });
        amount -= off;
      };

      const prev = journeys[journeys.length - 1];
      const rule = transferRule(model.transfers, prev, j);
      if (rule && prev) {
        const off = 'amount' in rule.discount ? rule.discount.amount : percentOf(amount, rule.discount.percent);
        take('TRANSFER', off, `${prev.kind} to ${j.kind} within ${minutes(rule.withinMs)} of journey ${prev.id}`);
      }

      if (concession) {
        const f = concession.fare;
        if ('percentOff' in f) take('CONCESSION', percentOf(amount, f.percentOff), `${concession.id}: ${f.percentOff}% off`);
        else take('CONCESSION', amount - f.flatFare, `${concession.id}: flat fare ${f.flatFare}`);
      }

      if (caps.daily !== undefined) {
        const room = caps.daily - (dailyUsed.get(day) ?? 0n);
        take('DAILY_CAP', amount - (room > 0n ? room : 0n), `daily cap ${caps.daily} on ${day}`);
      }
      if (caps.weekly !== undefined) {
        const room = caps.weekly - (weeklyUsed.get(j.isoWeek) ?? 0n);
        take('WEEKLY_CAP', amount - (room > 0n ? room : 0n), `weekly cap ${caps.weekly} in ${j.isoWeek}`);
      }
      j.charged = amount;
      dailyUsed.set(day, (dailyUsed.get(day) ?? 0n) + amount);
      weeklyUsed.set(j.isoWeek, (weeklyUsed.get(j.isoWeek) ?? 0n) + amount);
    }
    journeys.push(j);
  }
  return { currency: model.currency, journeys, unlinkedRepeats: unlinked };
}

/**
 * The interchange rule for `next`, if it is a transfer from `prev`: both
 * complete, next starting within the rule's window after prev ended.
 */
function transferRule(rules: readonly TransferRule[], prev: PricedJourney | undefined, next: PricedJourney): TransferRule | undefined {
  if (!prev || prev.status !== 'COMPLETE' || next.status !== 'COMPLETE' || prev.endMs === undefined) return undefined;
  const gap = next.startMs - prev.endMs;
  if (gap < 0) return undefined;
  return rules.find((r) => r.from === prev.kind && r.to === next.kind && gap <= r.withinMs);
}

// ---- Corrections ----

export interface FareRefund {
  /** The journey it is for now; undefined when no journey holds that charge's taps any more. */
  journeyId: string | undefined;
  /** The journey id the money was charged under (a key of `previous`). */
  chargedUnder: string;
  /** > 0, never more than what is still charged under chargedUnder. */
  amount: bigint;
}

export interface FareIncrease {
  journeyId: string;
  /** Net charged so far under every id this journey holds. */
  previouslyCharged: bigint;
  charged: bigint;
  /** charged - previouslyCharged, > 0: to be collected separately, never by this function. */
  amount: bigint;
}

export interface FareCorrections {
  refunds: FareRefund[];
  increases: FareIncrease[];
}

/**
 * What to give back (and what more is due) when a card's journeys are priced
 * anew, e.g. after a late tap. `previous` maps the journey id each charge was
 * made under to the net amount still charged under it (debited minus
 * refunded). A journey's id is one of its tap ids, and a journey holds every
 * tap it ever held (taps are only added), so each earlier id is claimed by the
 * one journey that holds that tap now: a journey that merged two earlier ones
 * (an exit charged the maximum, then its entry arrived) compares its fare with
 * both charges. Refunds come out of the charges the journey claims, its own id
 * first, and never exceed any of them; a charge no journey claims is refunded
 * in full. A journey now dearer than what it claims is reported as an
 * increase, for the caller to collect as a new, separately idempotent charge.
 * An OPEN journey keeps what it claims until it is priced.
 */
export function fareCorrections(previous: ReadonlyMap<string, bigint>, journeys: readonly PricedJourney[]): FareCorrections {
  for (const [id, amount] of previous) if (amount < 0n) throw new FareEngineError(`charge ${id} is negative (${amount})`);
  const claimed = new Set<string>();
  const refunds: FareRefund[] = [];
  const increases: FareIncrease[] = [];

  for (const j of journeys) {
    const ids = [...new Set(j.taps.map((t) => t.tapId))].filter((id) => previous.has(id));
    ids.sort((a, b) => (a === j.id ? -1 : b === j.id ? 1 : a < b ? -1 : a > b ? 1 : 0));
    const before = ids.reduce((sum, id) => sum + previous.get(id)!, 0n);
    ids.forEach((id) => claimed.add(id));
    // Not priced yet: what it holds stays held until it is, rather than going back and being charged again.
    if (j.status === 'OPEN') continue;
    if (j.charged > before) {
      increases.push({ journeyId: j.id, previouslyCharged: before, charged: j.charged, amount: j.charged - before });
      continue;
    }
    let due = before - j.charged;
    for (const id of ids) {
      if (due === 0n) break;
      const held = previous.get(id)!;
      const amount = held < due ? held : due;
      if (amount > 0n) refunds.push({ journeyId: j.id, chargedUnder: id, amount });
      due -= amount;
    }
  }
  for (const [id, amount] of [...previous].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!claimed.has(id) && amount > 0n) refunds.push({ journeyId: undefined, chargedUnder: id, amount });
  }
  return { refunds, increases };
}
