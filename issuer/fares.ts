// Fare capping: a card never pays more than the daily cap for one service
// day (service-day.ts). Each tap's amount due is its fare reduced so that the
// day's total stays within the cap, decided when the issuer stores the tap,
// in arrival order.
import { parseClockTime, parseUtcOffset, UTC_DAYS, type ServiceDayConfig } from './service-day.js';

export interface FareCapConfig extends ServiceDayConfig {
  /** Most a card pays per service day, in minor units; no cap when undefined. */
  dailyCapMinor: bigint | undefined;
}

export const NO_CAP: FareCapConfig = { dailyCapMinor: undefined, ...UTC_DAYS };

/** The fare reduced so that chargedToday + due never exceeds the cap. */
export function amountDue(fare: bigint, chargedToday: bigint, cap: bigint | undefined): bigint {
  if (cap === undefined) return fare;
  const room = cap - chargedToday;
  if (room <= 0n) return 0n;
  return fare < room ? fare : room;
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
