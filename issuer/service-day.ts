// The service day: the operator's business day that taps, fare caps and the
// reconciliation report are counted by. It is the local day that starts at a
// boundary (e.g. 04:00 at UTC+8, so a ride home at 01:00 still counts for the
// evening before). This module is the one place that rule is computed.

export interface ServiceDayConfig {
  /** Minutes after local midnight at which a service day starts (240 = 04:00). */
  dayStartMinutes: number;
  /** Local time's offset from UTC in minutes (480 = UTC+8). */
  utcOffsetMinutes: number;
}

/** The UTC calendar day, for an issuer that configures no boundary. */
export const UTC_DAYS: ServiceDayConfig = { dayStartMinutes: 0, utcOffsetMinutes: 0 };

const DAY_MS = 86_400_000;

/** How far a service day's start lies from UTC midnight of its date, in ms (04:00 at UTC+8: -4 h). */
const startOffsetMs = (cfg: ServiceDayConfig) => (cfg.dayStartMinutes - cfg.utcOffsetMinutes) * 60_000;

/** The service day, "YYYY-MM-DD", that the moment atMs (epoch ms) belongs to. */
export function serviceDay(atMs: number, cfg: ServiceDayConfig): string {
  return new Date(atMs - startOffsetMs(cfg)).toISOString().slice(0, 10);
}

export interface ServiceDayRange {
  /** First millisecond of the day (epoch ms, inclusive). */
  start: number;
  /** First millisecond of the next day (exclusive). */
  end: number;
}

/** The span of the service day "YYYY-MM-DD": every moment m in it has serviceDay(m) === day. */
export function serviceDayRange(day: string, cfg: ServiceDayConfig): ServiceDayRange {
  const start = Date.parse(`${day}T00:00:00Z`) + startOffsetMs(cfg);
  return { start, end: start + DAY_MS };
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
