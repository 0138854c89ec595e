// What the issuer decides about authenticated taps while it stores them, in
// the TapReport transaction: the amount due under the daily fare cap, and
// clone detection from the card counter.
//
// A genuine card's counter rises by one on every zero-amount debit, so two
// taps with the same counter, or a tap taken later with a lower counter than
// one taken earlier, mean two chips share one card image: a clone. Taps reach
// the issuer out of order (each terminal forwards on its own), so a counter
// lower than the highest seen is not evidence by itself; only the order of
// tapped_at is, beyond a clock tolerance between terminals.
import { asText, chunks, isPostgres, raiseColumn, sumAsText, type Db } from '../common/db.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';
import { DEFAULT_CLONE_CLOCK_SKEW_MS, DEFAULT_REPEAT_WINDOW_MS, TAP_CLOCK_AHEAD_TOLERANCE_MS, type IssuerContext } from './context.js';
import { addReason } from './deny-list.js';
import { amountDue, NO_CAP } from './fares.js';
import { serviceDay } from './service-day.js';

export type CloneReason = 'COUNTER_REPEATED' | 'COUNTER_WENT_BACK';
export type ClockFlag = 'CLOCK_AHEAD' | 'CLOCK_BEHIND';

export interface CounterTap {
  tapId: string;
  counter: bigint;
  /** Epoch ms, by the terminal's clock. */
  tappedAt: number;
  /** The terminal's clock was implausible for this tap: its time proves no order. */
  clockFlag?: ClockFlag;
}

/**
 * Whether a terminal's clock was implausible when it stamped a tap (a clock
 * that jumped, as an NTP step or a dead RTC battery makes it): stamped more
 * than the tolerance after the issuer received it (CLOCK_AHEAD), or before the
 * card's latest tap by more than the clone check's skew although the card
 * counter shows it came after it (CLOCK_BEHIND). Such a tap is kept and
 * charged, but its service day comes from the time it was received and its
 * time takes no part in the clone check's order comparisons.
 */
export function clockFlag(
  tap: { tappedAt: number; counter: bigint },
  receivedAt: number,
  card: { lastCounter: bigint; lastTappedAt: number | undefined },
  skewMs: number,
): ClockFlag | undefined {
  if (tap.tappedAt > receivedAt + TAP_CLOCK_AHEAD_TOLERANCE_MS) return 'CLOCK_AHEAD';
  if (card.lastTappedAt !== undefined && tap.counter > card.lastCounter && tap.tappedAt < card.lastTappedAt - skewMs) return 'CLOCK_BEHIND';
  return undefined;
}

/** Why two taps of one card show a clone, or undefined when they are consistent with one genuine card. */
export function cloneEvidence(a: CounterTap, b: CounterTap, skewMs: number): CloneReason | undefined {
  if (a.tapId === b.tapId) return undefined;
  if (a.counter === b.counter) return 'COUNTER_REPEATED';
  // Order by time needs two clocks that were plausible.
  if (a.clockFlag || b.clockFlag) return undefined;
  const [earlier, later] = a.tappedAt <= b.tappedAt ? [a, b] : [b, a];
  if (later.tappedAt - earlier.tappedAt > skewMs && later.counter < earlier.counter) return 'COUNTER_WENT_BACK';
  return undefined;
}

/** A tap as the repeated-presentation rule sees it. */
export interface RideTap {
  tapId: string;
  terminalId: string;
  lineId?: string;
  counter: bigint;
  /** Epoch ms, by the terminal's clock. */
  tappedAt: number;
  /** Counter of the card's record of its last completed tap at this tap (0 when the card held none); undefined when the terminal did not report it. */
  lastCompletedCounter?: bigint;
  /** Set on a tap that is already the repeat of another. */
  repeatOf?: string;
}

/**
 * True when `later` is the same ride as `earlier` presented again: one card
 * (the caller's concern), the same terminal or line, `later` within the
 * window after `earlier`, neither already a repeat, and the card's record at
 * `later` showing that `earlier` never completed (its last completed counter
 * is below `earlier`'s) although the card did debit for it (its counter is
 * above). A card whose record shows the earlier tap completed took a second
 * ride: the rider saw the gate open.
 */
export function sameRide(earlier: RideTap, later: RideTap, windowMs: number): boolean {
  if (earlier.tapId === later.tapId || earlier.repeatOf !== undefined || later.repeatOf !== undefined) return false;
  const samePlace = earlier.terminalId === later.terminalId || (earlier.lineId !== undefined && earlier.lineId === later.lineId);
  const gap = later.tappedAt - earlier.tappedAt;
  if (!samePlace || gap < 0 || gap > windowMs) return false;
  // Without the card's record nothing shows the earlier tap was torn: both are rides.
  if (later.lastCompletedCounter === undefined) return false;
  return later.lastCompletedCounter < earlier.counter && earlier.counter < later.counter;
}

/** A tap whose card record lags behind its counter by more than this one debit: some earlier debit never completed. */
export const recordLags = (t: Pick<RideTap, 'counter' | 'lastCompletedCounter'>) => t.lastCompletedCounter !== undefined && t.lastCompletedCounter < t.counter - 1n;

export const rideTap = (tap: Tap): RideTap => ({
  tapId: tap.tapId,
  terminalId: tap.terminalId,
  lineId: tap.lineId || undefined,
  counter: BigInt(tap.proof!.counter),
  tappedAt: tap.tappedAt!.getTime(),
  lastCompletedCounter: tap.cardLastCompleted ? BigInt(tap.cardLastCompleted.counter) : undefined,
  repeatOf: tap.repeatOfTapId || undefined,
});

export interface TapAssessment {
  serviceDay: string;
  due: bigint;
  cloneReason?: CloneReason;
  clockFlag?: ClockFlag;
  /** The tap is the same ride as this one (the terminal's repeat, or a pair the issuer found): nothing is due. */
  repeatOf?: string;
}

const rideRow = (r: Record<string, string | null>): RideTap => ({
  tapId: r.tap_id!,
  terminalId: r.terminal_id!,
  lineId: r.line_id ?? undefined,
  counter: BigInt(r.proof_counter!),
  tappedAt: Number(r.tapped_at),
  lastCompletedCounter: r.card_last_completed_counter === null ? undefined : BigInt(r.card_last_completed_counter),
  repeatOf: r.repeat_of_tap_id ?? undefined,
});

/**
 * The tap of the same ride as `tap` among the card's stored taps and the
 * batch's earlier ones, when there is one not yet paired: either an earlier
 * tap it repeats (its own record lags), or a later tap already stored whose
 * record shows this one never completed (the logs arrived out of order).
 * Either way one of the two is charged, never both.
 */
async function pairedRide(trx: Db, tap: Tap, self: RideTap, batch: RideTap[], linked: Set<string>, windowMs: number, laterMayLag: boolean): Promise<string | undefined> {
  const free = (t: RideTap) => !linked.has(t.tapId);
  // An earlier tap this one repeats (its own record lags), else a later one that repeats it (arrived first).
  for (const direction of ['earlier', 'later'] as const) {
    if (direction === 'earlier' ? !recordLags(self) : !laterMayLag) continue;
    const pairs = (o: RideTap) => free(o) && (direction === 'earlier' ? sameRide(o, self, windowMs) : sameRide(self, o, windowMs));
    const fromBatch = batch.find(pairs);
    if (fromBatch) return fromBatch.tapId;
    const query = trx('taps')
      .where({ card_id: tap.cardId })
      .whereNot({ state: 'REJECTED' })
      .whereNull('repeat_of_tap_id')
      .where((q) => {
        q.where('terminal_id', self.terminalId);
        if (self.lineId !== undefined) q.orWhere('line_id', self.lineId);
      });
    if (direction === 'earlier') query.whereBetween('tapped_at', [String(self.tappedAt - windowMs), String(self.tappedAt)]);
    // Only a later tap whose record lags can repeat this one.
    else query.whereBetween('tapped_at', [String(self.tappedAt), String(self.tappedAt + windowMs)]).whereRaw('card_last_completed_counter < proof_counter - 1');
    const rows = await query
      .orderBy('tapped_at', direction === 'earlier' ? 'desc' : 'asc')
      .limit(20)
      .select('tap_id', 'terminal_id', 'line_id', asText(trx, 'proof_counter'), asText(trx, 'tapped_at'), asText(trx, 'card_last_completed_counter'), 'repeat_of_tap_id');
    const candidates = rows.map(rideRow).filter(pairs);
    if (candidates.length === 0) continue;
    // A candidate another stored tap already pairs with is taken: one repeat per ride.
    const taken = new Set<string>(
      (await trx('taps').whereIn('repeat_of_tap_id', candidates.map((c) => c.tapId)).select('repeat_of_tap_id')).map((r: { repeat_of_tap_id: string }) => r.repeat_of_tap_id),
    );
    const found = candidates.find((c) => !taken.has(c.tapId));
    if (found) return found.tapId;
  }
  return undefined;
}

interface CardState {
  /** Highest counter seen (enrollment proof or taps). */
  lastCounter: bigint;
  lastTappedAt: number | undefined;
  /** Taps of this batch assessed so far. */
  batch: CounterTap[];
}

/**
 * Assesses the authenticated taps of enrolled cards in arrival order and
 * stores what concerns already stored rows: clone marks on earlier taps,
 * CLONED listings, the cards' latest tapped_at. Returns each tap's
 * assessment and whether the deny list changed.
 */
export async function assessTaps(trx: Db, ctx: IssuerContext, taps: Tap[], now: number): Promise<{ byTap: Map<string, TapAssessment>; denyListChanged: boolean }> {
  const cap = ctx.fareCap ?? NO_CAP;
  const skew = ctx.cloneClockSkewMs ?? DEFAULT_CLONE_CLOCK_SKEW_MS;
  const repeatWindow = ctx.repeatWindowMs ?? DEFAULT_REPEAT_WINDOW_MS;
  // Taps of this batch by card, as the repeat rule sees them, and the taps a repeat in the batch links to.
  const rides = new Map<string, RideTap[]>();
  const linked = new Set<string>();
  const cardIds = [...new Set(taps.map((t) => t.cardId))].sort();
  const cards = new Map<string, CardState>();
  for (const ids of chunks(cardIds)) {
    // On PostgreSQL, concurrent reports of one card queue here, so the day's
    // total and the counter history each sees include the other's taps.
    if (isPostgres(trx)) await trx('cards').whereIn('card_id', ids).orderBy('card_id').forUpdate().select('card_id');
    const rows = await trx('cards').whereIn('card_id', ids).select('card_id', asText(trx, 'last_counter'), asText(trx, 'last_tapped_at'));
    for (const r of rows) {
      cards.set(r.card_id, { lastCounter: BigInt(r.last_counter), lastTappedAt: r.last_tapped_at == null ? undefined : Number(r.last_tapped_at), batch: [] });
    }
  }

  const byTap = new Map<string, TapAssessment>();
  // "<card>\0<day>" -> amount due so far that day: what is stored, read in one grouped query per chunk of cards.
  const spent = new Map<string, bigint>();
  if (cap.dailyCapMinor !== undefined) {
    // A tap with an implausible time counts on the day it was received.
    const days = [...new Set([...taps.map((t) => serviceDay(t.tappedAt!.getTime(), cap)), serviceDay(now, cap)])];
    for (const ids of chunks(cardIds, 400)) {
      for (const someDays of chunks(days, 400)) {
        const rows = await trx('taps')
          .whereIn('card_id', ids)
          .whereIn('service_day', someDays)
          .whereNot({ state: 'REJECTED' })
          .groupBy('card_id', 'service_day')
          .select('card_id', 'service_day', sumAsText(trx, 'due_minor', 'total'));
        for (const r of rows) spent.set(`${r.card_id}\0${r.service_day}`, BigInt(r.total));
      }
    }
  }
  // Cards with a stored tap whose record lags, late enough to pair with a tap of this batch (rare: one query per chunk of cards).
  const laggingCards = new Set<string>();
  if (taps.length > 0) {
    const earliest = Math.min(...taps.map((t) => t.tappedAt!.getTime()));
    for (const ids of chunks(cardIds)) {
      const rows = await trx('taps')
        .whereIn('card_id', ids)
        .where('tapped_at', '>=', String(earliest))
        .whereNull('repeat_of_tap_id')
        .whereRaw('card_last_completed_counter < proof_counter - 1')
        .distinct('card_id');
      for (const r of rows) laggingCards.add(r.card_id);
    }
  }
  const markStored = new Map<string, CloneReason>();
  const cloned = new Set<string>();
  for (const tap of taps) {
    const card = cards.get(tap.cardId)!;
    const claimedAt = tap.tappedAt!.getTime();
    const counter = BigInt(tap.proof!.counter);
    const flag = clockFlag({ tappedAt: claimedAt, counter }, now, card, skew);
    // The time the issuer goes by: the terminal's, unless its clock was implausible.
    const tappedAt = flag ? now : claimedAt;
    const day = serviceDay(tappedAt, cap);

    // A repeat is the same ride as another tap: nothing is due, and the cap does not count it.
    const ride = rideTap(tap);
    const cardRides = rides.get(tap.cardId) ?? [];
    rides.set(tap.cardId, cardRides);
    let repeatOf = ride.repeatOf;
    const laterMayLag = cardRides.some(recordLags) || laggingCards.has(tap.cardId);
    if (repeatOf === undefined && (recordLags(ride) || laterMayLag)) {
      repeatOf = await pairedRide(trx, tap, ride, cardRides, linked, repeatWindow, laterMayLag);
    }
    if (repeatOf !== undefined) linked.add(repeatOf);
    cardRides.push({ ...ride, repeatOf });

    let due = repeatOf !== undefined ? 0n : BigInt(tap.fare!.minorUnits);
    if (repeatOf === undefined && cap.dailyCapMinor !== undefined) {
      const key = `${tap.cardId}\0${day}`;
      const sofar = spent.get(key) ?? 0n;
      due = amountDue(due, sofar, cap.dailyCapMinor);
      spent.set(key, sofar + due);
    }
    const assessment: TapAssessment = { serviceDay: day, due, ...(flag ? { clockFlag: flag } : {}), ...(repeatOf !== undefined ? { repeatOf } : {}) };
    byTap.set(tap.tapId, assessment);
    if (flag) ctx.log.warn({ tapId: tap.tapId, cardId: tap.cardId, clockFlag: flag, tappedAt: claimedAt, receivedAt: now }, 'tap time implausible; priced by its receipt');

    const self: CounterTap = { tapId: tap.tapId, counter, tappedAt, ...(flag ? { clockFlag: flag } : {}) };
    // A tap that is the newest so far (counter above all seen, in this batch
    // too, and not taken before the latest by more than the tolerance) cannot
    // contradict any: only otherwise are the batch and the history compared.
    const inOrder = self.counter > card.lastCounter && (card.lastTappedAt === undefined || tappedAt >= card.lastTappedAt - skew);
    if (!inOrder) {
      for (const other of card.batch) {
        const reason = cloneEvidence(self, other, skew);
        if (reason) {
          assessment.cloneReason ??= reason;
          byTap.get(other.tapId)!.cloneReason ??= reason;
          cloned.add(tap.cardId);
        }
      }
      const rows = await trx('taps')
        .where({ card_id: tap.cardId })
        .whereNot({ state: 'REJECTED' })
        .where((q) =>
          q
            .where('proof_counter', self.counter.toString())
            // Order by time only between taps whose clocks were plausible.
            .orWhere((q2) => q2.whereNull('clock_flag').where('proof_counter', '>', self.counter.toString()).where('tapped_at', '<', String(tappedAt - skew)))
            .orWhere((q3) => q3.whereNull('clock_flag').where('proof_counter', '<', self.counter.toString()).where('tapped_at', '>', String(tappedAt + skew))),
        )
        .limit(50)
        .select('tap_id', asText(trx, 'proof_counter'), asText(trx, 'tapped_at'), 'clone_reason', 'clock_flag');
      for (const r of rows) {
        const other: CounterTap = { tapId: r.tap_id, counter: BigInt(r.proof_counter), tappedAt: Number(r.tapped_at), ...(r.clock_flag ? { clockFlag: r.clock_flag } : {}) };
        const reason = cloneEvidence(self, other, skew);
        if (!reason) continue;
        assessment.cloneReason ??= reason;
        if (!r.clone_reason && !markStored.has(r.tap_id)) markStored.set(r.tap_id, reason);
        cloned.add(tap.cardId);
      }
    }
    card.batch.push(self);
    if (self.counter > card.lastCounter) card.lastCounter = self.counter;
    if (card.lastTappedAt === undefined || tappedAt > card.lastTappedAt) card.lastTappedAt = tappedAt;
  }

  for (const [tapId, reason] of markStored) {
    await trx('taps').where({ tap_id: tapId }).whereNull('clone_reason').update({ clone_reason: reason, updated_at: String(now) });
  }
  const latest = new Map<string, string>();
  for (const [cardId, card] of cards) {
    if (card.batch.length > 0 && card.lastTappedAt !== undefined) latest.set(cardId, String(card.lastTappedAt));
  }
  await raiseColumn(trx, 'cards', 'card_id', 'last_tapped_at', latest);
  let denyListChanged = false;
  for (const cardId of cloned) {
    if (await addReason(trx, cardId, 'CLONED', now)) denyListChanged = true;
    ctx.log.warn({ cardId }, 'card counter shows a clone; card listed CLONED');
  }
  return { byTap, denyListChanged };
}
