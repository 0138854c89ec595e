// Fare capping: a card never pays more than the daily cap for one service
// day. A service day is the local day that starts at the boundary (e.g. 04:00
// at UTC+8, so a ride home at 01:00 still counts for the evening before).
// Each tap's amount due is its fare reduced so that the day's total stays
// within the cap, decided when the issuer stores the tap, in arrival order.

export interface ServiceDayConfig {
  /** Minutes after local midnight at which a service day starts (240 = 04:00). */
  dayStartMinutes: number;
  /** Local time's offset from UTC in minutes (480 = UTC+8). */
  utcOffsetMinutes: number;
}

export interface FareCapConfig extends ServiceDayConfig {
  /** Most a card pays per service day, in minor units; no cap when undefined. */
  dailyCapMinor: bigint | undefined;
}

export const NO_CAP: FareCapConfig = { dailyCapMinor: undefined, dayStartMinutes: 0, utcOffsetMinutes: 0 };

/** The service day, "YYYY-MM-DD", that a tap at tappedAtMs (epoch ms) belongs to. */
export function serviceDay(tappedAtMs: number, cfg: ServiceDayConfig): string {
  return new Date(tappedAtMs + (cfg.utcOffsetMinutes - cfg.dayStartMinutes) * 60_000).toISOString().slice(0, 10);
}

/** The fare reduced so that chargedToday + due never exceeds the cap. */
export function amountDue(fare: bigint, chargedToday: bigint, cap: bigint | undefined): bigint {
  if (cap === undefined) return fare;
  const room = cap - chargedToday;
  if (room <= 0n) return 0n;
  return fare < room ? fare : room;
}

/** "04:00" -> 240. */
export function parseClockTime(value: string): number {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(value);
  if (!m) throw new Error(`expected a time "HH:MM", got ${JSON.stringify(value)}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** "+08:00" / "-03:30" / "Z" -> minutes east of UTC. */
export function parseUtcOffset(value: string): number {
  if (value === 'Z' || value === '+00:00' || value === '-00:00') return 0;
  const m = /^([+-])(0\d|1[0-4]):([0-5]\d)$/.exec(value);
  if (!m) throw new Error(`expected a UTC offset "+HH:MM", got ${JSON.stringify(value)}`);
  const minutes = Number(m[2]) * 60 + Number(m[3]);
  return m[1] === '-' ? -minutes : minutes;
}

/**
 * The cap from the issuer's settings (settings.ts): the daily cap (unset or
 * 0: no cap), the service day's start ("04:00") and UTC offset ("+08:00").
 */
export function fareCapFromSettings(s: { dailyCapMinorUnits?: string; serviceDayStart: string; utcOffset: string }): FareCapConfig {
  const cap = s.dailyCapMinorUnits ?? '';
  if (cap !== '' && !/^\d+$/.test(cap)) throw new Error(`ISSUER_DAILY_CAP_MINOR_UNITS must be a whole number of minor units, got ${JSON.stringify(cap)}`);
  return {
    dailyCapMinor: cap === '' || cap === '0' ? undefined : BigInt(cap),
    dayStartMinutes: parseClockTime(s.serviceDayStart),
    utcOffsetMinutes: parseUtcOffset(s.utcOffset),
  };
}
