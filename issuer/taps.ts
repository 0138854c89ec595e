// TapReport: the taps a terminal accepted offline arrive in batches. Each is
// stored once under its tap id, its card proof is re-verified, the card
// counter is recorded, and a valid tap is queued for debit (state RECEIVED,
// drained by the deduction worker).
import { GroupCommit } from '../common/group-commit.js';
import { timingSafeEqual } from 'node:crypto';
import { MAC_BYTES, TERMINAL_RANDOM_BYTES, computeCardMac, diversifyCardKey } from '../common/card.js';
import { asText, chunks, insertRows, raiseColumn, retryOnUniqueViolation, type Db } from '../common/db.js';
import { fingerprint } from '../common/ids.js';
import { Violations } from '../common/validate.js';
import {
  TapReportStatus,
  TapState,
  type IssuerTap,
  type TapReportRequest,
  type TapReportResponse,
  type TapReportResult,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import { Tap } from '../gen/tapcredit/type/v1/tap.js';
import type { IssuerContext } from './context.js';
import { recordArrivals, TAP_STATES, type TapStateName } from './tap-states.js';
import { assessTaps, type TapAssessment } from './tap-risk.js';

export function validateTapReport(req: TapReportRequest, currencyCode: string): void {
  const v = new Violations();
  if (v.id('terminal_id', req.terminalId) && req.terminalId.includes(':')) v.add('terminal_id', "must not contain ':'");
  v.batch('taps', req.taps);
  const firstIndex = new Map<string, number>();
  req.taps.forEach((tap, i) => {
    const f = `taps[${i}]`;
    const sequence = v.uint63(`${f}.terminal_sequence`, tap.terminalSequence);
    if (v.id(`${f}.tap_id`, tap.tapId)) {
      const earlier = firstIndex.get(tap.tapId);
      if (earlier !== undefined) v.add(`${f}.tap_id`, `duplicates taps[${earlier}].tap_id`);
      else firstIndex.set(tap.tapId, i);
      if (sequence !== undefined && tap.tapId !== `${tap.terminalId}:${sequence}`) {
        v.add(`${f}.tap_id`, 'must be "<terminal_id>:<terminal_sequence>"');
      }
    }
    if (tap.terminalId !== req.terminalId) v.add(`${f}.terminal_id`, 'must equal the request terminal_id');
    v.id(`${f}.card_id`, tap.cardId);
    v.id(`${f}.agreement_id`, tap.agreementId);
    if (tap.lineId) v.id(`${f}.line_id`, tap.lineId);
    // A terminal repeats only its own taps, never the tap itself.
    if (tap.repeatOfTapId !== undefined && (!tap.repeatOfTapId.startsWith(`${tap.terminalId}:`) || tap.repeatOfTapId === tap.tapId)) {
      v.add(`${f}.repeat_of_tap_id`, "must be another tap of the same terminal (\"<terminal_id>:<sequence>\")");
    }
    if (tap.cardLastCompleted) {
      // A card that holds no record is reported as the empty record: no tap id, counter 0.
      const completed = v.uint63(`${f}.card_last_completed.counter`, tap.cardLastCompleted.counter);
      if (completed !== 0n || tap.cardLastCompleted.tapId !== '') v.id(`${f}.card_last_completed.tap_id`, tap.cardLastCompleted.tapId);
    }
    if (v.money(`${f}.fare`, tap.fare, { positive: true }) !== undefined && tap.fare!.currencyCode !== currencyCode) {
      v.add(`${f}.fare.currency_code`, `must be ${currencyCode}, the issuer's currency`);
    }
    if (!tap.tappedAt || Number.isNaN(tap.tappedAt.getTime())) v.add(`${f}.tapped_at`, 'is required');
    const p = tap.proof;
    if (!p) {
      v.add(`${f}.proof`, 'is required');
      return;
    }
    if (p.cardId !== tap.cardId) v.add(`${f}.proof.card_id`, "must equal the tap's card_id");
    if (p.terminalId !== tap.terminalId) v.add(`${f}.proof.terminal_id`, "must equal the tap's terminal_id");
    if (p.terminalSequence !== tap.terminalSequence) v.add(`${f}.proof.terminal_sequence`, "must equal the tap's terminal_sequence");
    v.uint63(`${f}.proof.counter`, p.counter);
    if (p.mac.length !== MAC_BYTES) v.add(`${f}.proof.mac`, `must be ${MAC_BYTES} bytes`);
    if (p.terminalRandom.length !== TERMINAL_RANDOM_BYTES) v.add(`${f}.proof.terminal_random`, `must be ${TERMINAL_RANDOM_BYTES} bytes`);
  });
  v.throwIfAny();
}

/** Re-verifies card proofs, deriving each card's key once per batch. */
function macVerifier(masterKey: Buffer) {
  const keys = new Map<string, Buffer>();
  return (tap: Tap): boolean => {
    const proof = tap.proof!;
    let key = keys.get(proof.cardId);
    if (!key) keys.set(proof.cardId, (key = diversifyCardKey(masterKey, proof.cardId)));
    return timingSafeEqual(computeCardMac(key, { ...proof, amount: 0n }), proof.mac);
  };
}

interface Outcome {
  tap: Tap;
  print: string;
  macValid: boolean;
  result: TapReportResult;
  /** State the tap is stored in, when it is stored now. */
  state?: TapStateName;
  reason?: string;
  /** Amount due and clone evidence, for an authenticated tap of an enrolled card. */
  risk?: TapAssessment;
}

interface PreparedTap {
  tap: Tap;
  print: string;
  macValid: boolean;
}

/** Most taps committed in one group of reports. */
const MAX_GROUP_TAPS = 5000;

/**
 * Each issuer context's reports are committed in groups: reports arriving
 * while a group commits share the next transaction and fsync, so a city of
 * gates each reporting single taps is not held to one fsync per tap.
 */
const ingests = new WeakMap<IssuerContext, GroupCommit<PreparedTap[], Outcome[]>>();

function ingestOf(ctx: IssuerContext): GroupCommit<PreparedTap[], Outcome[]> {
  let ingest = ingests.get(ctx);
  if (!ingest) {
    ingest = new GroupCommit({ maxWeight: MAX_GROUP_TAPS, weight: (report) => report.length, commit: (reports) => storeReports(ctx, reports) });
    ingests.set(ctx, ingest);
  }
  return ingest;
}

export async function reportTaps(ctx: IssuerContext, req: TapReportRequest): Promise<TapReportResponse> {
  validateTapReport(req, ctx.currencyCode);
  const verify = macVerifier(ctx.masterKey);
  // Hashing and MAC checks run before the transaction, so the write lock is held only for the writes.
  // The traceparent is left out of the fingerprint: it is not part of the tap's identity.
  const prepared = req.taps.map((tap) => ({ tap, print: fingerprint(Tap.encode({ ...tap, traceparent: undefined }).finish()), macValid: verify(tap) }));
  const outcomes = await ingestOf(ctx).submit(prepared);
  return { results: outcomes.map((o) => o.result) };
}

/** Stores reports together in one transaction; resolves each report's outcomes. */
async function storeReports(ctx: IssuerContext, reports: PreparedTap[][]): Promise<Outcome[][]> {
  // A concurrent report (another replica's) may insert one of these tap ids first: run again, it is now a DUPLICATE.
  const { outcomes, denyListChanged } = await retryOnUniqueViolation(() => ctx.db.transaction((trx) => storeBatch(trx, ctx, ctx.now().getTime(), reports.flat())));
  if (denyListChanged) ctx.denyListFeed?.notify();
  let next = 0;
  return reports.map((report) => outcomes.slice(next, (next += report.length)));
}

async function storeBatch(
  trx: Db,
  ctx: IssuerContext,
  now: number,
  prepared: PreparedTap[],
): Promise<{ outcomes: Outcome[]; denyListChanged: boolean }> {
  const tapIds = prepared.map((p) => p.tap.tapId);
  const stored = new Map<string, string>();
  for (const ids of chunks(tapIds)) {
    for (const row of await trx('taps').whereIn('tap_id', ids).select('tap_id', 'fingerprint')) stored.set(row.tap_id, row.fingerprint);
  }
  const cardIds = [...new Set(prepared.map((p) => p.tap.cardId))];
  const enrolledCards = new Map<string, bigint>();
  const expiries = new Map<string, string>();
  const bindings = new Set<string>();
  for (const ids of chunks(cardIds)) {
    // Any card state: a ride taken before the card was unenrolled or reported
    // lost may arrive later and is still paid under its agreement.
    for (const row of await trx('cards').whereIn('card_id', ids).select('card_id', 'expires_on', asText(trx, 'last_counter'))) {
      enrolledCards.set(row.card_id, BigInt(row.last_counter));
      expiries.set(row.card_id, row.expires_on);
    }
    for (const row of await trx('enrollments').whereIn('card_id', ids).select('card_id', 'agreement_id')) {
      bindings.add(`${row.card_id}\0${row.agreement_id}`);
    }
  }

  const outcomes: Outcome[] = prepared.map(({ tap, print, macValid }) => {
    const tapId = tap.tapId;
    // Reports committed together may carry the same tap (a terminal's retry): the later copy finds the first stored.
    const earlier = stored.get(tapId);
    if (earlier !== undefined) {
      return earlier === print
        ? { tap, print, macValid, result: { tapId, status: TapReportStatus.TAP_REPORT_STATUS_DUPLICATE, reason: '' } }
        : { tap, print, macValid, result: { tapId, status: TapReportStatus.TAP_REPORT_STATUS_TAP_ID_CONFLICT, reason: 'TAP_ID_CONFLICT' } };
    }
    stored.set(tapId, print);
    let reason: string | undefined;
    if (!macValid) reason = 'CARD_AUTHENTICATION_FAILED';
    else if (!enrolledCards.has(tap.cardId) || !bindings.has(`${tap.cardId}\0${tap.agreementId}`)) reason = 'CARD_NOT_ENROLLED';
    // The issuer's own record of the card decides its expiry, whatever the card told the gate (UTC day, as the terminal checks it).
    else if (tap.tappedAt!.toISOString().slice(0, 10) > expiries.get(tap.cardId)!) reason = 'CARD_EXPIRED';
    if (reason) {
      return { tap, print, macValid, state: 'REJECTED', reason, result: { tapId, status: TapReportStatus.TAP_REPORT_STATUS_REJECTED, reason } };
    }
    return { tap, print, macValid, state: 'RECEIVED', result: { tapId, status: TapReportStatus.TAP_REPORT_STATUS_STORED, reason: '' } };
  });

  // Fare cap and clone check, in arrival order; a tap with nothing left to pay is final at once.
  const authenticated = outcomes.filter((o) => o.state === 'RECEIVED');
  const { byTap, denyListChanged } = await assessTaps(trx, ctx, authenticated.map((o) => o.tap), now);
  for (const o of authenticated) {
    o.risk = byTap.get(o.tap.tapId)!;
    if (o.risk.repeatOf !== undefined) o.state = 'REPEATED';
    else if (o.risk.due === 0n) o.state = 'CAPPED';
  }

  const toStore = outcomes.filter((o): o is Outcome & StoredTap => o.state !== undefined);
  for (const batch of chunks(toStore, 400)) {
    await insertRows(
      trx,
      'taps',
      batch.map((o) => tapRow(o, now)),
    );
  }
  await recordArrivals(trx, toStore.map((o) => ({ tapId: o.tap.tapId, state: o.state })), now);

  // The card counter only moves on authenticated taps of enrolled cards.
  const highest = new Map<string, bigint>();
  for (const o of toStore) {
    if (o.state !== 'RECEIVED' && o.state !== 'CAPPED' && o.state !== 'REPEATED') continue;
    const counter = BigInt(o.tap.proof!.counter);
    if (counter > (highest.get(o.tap.cardId) ?? enrolledCards.get(o.tap.cardId)!)) highest.set(o.tap.cardId, counter);
  }
  // Conditional, so a concurrent batch that saw a higher counter is never overwritten; one statement per chunk of cards.
  await raiseColumn(trx, 'cards', 'card_id', 'last_counter', new Map([...highest].map(([cardId, counter]) => [cardId, counter.toString()])), {
    updated_at: String(now),
  });
  return { outcomes, denyListChanged };
}

/** A tap as it is stored: reported, fingerprinted, in its first state. */
export interface StoredTap {
  tap: Tap;
  print: string;
  state: TapStateName;
  reason?: string;
  /** The fare cap's and clone check's assessment; none for a REJECTED tap. */
  risk?: TapAssessment;
}

/** The taps row of a tap as the issuer stores it on arrival (the storage baseline of the bench inserts the same). */
export function tapRow({ tap, print, state, reason, risk }: StoredTap, now: number): Record<string, unknown> {
  return {
    tap_id: tap.tapId,
    terminal_id: tap.terminalId,
    terminal_sequence: tap.terminalSequence,
    card_id: tap.cardId,
    agreement_id: tap.agreementId,
    fare_currency: tap.fare!.currencyCode,
    fare_minor: tap.fare!.minorUnits,
    tapped_at: String(tap.tappedAt!.getTime()),
    proof_counter: tap.proof!.counter,
    proof_terminal_random: tap.proof!.terminalRandom,
    proof_mac: tap.proof!.mac,
    fingerprint: print,
    state,
    decline_reason: reason ?? null,
    traceparent: tap.traceparent || null,
    line_id: tap.lineId || null,
    service_day: risk?.serviceDay ?? null,
    due_minor: risk ? risk.due.toString() : null,
    clone_reason: risk?.cloneReason ?? null,
    clock_flag: risk?.clockFlag ?? null,
    reported_repeat_of_tap_id: tap.repeatOfTapId || null,
    card_last_completed_tap_id: tap.cardLastCompleted?.tapId ?? null,
    card_last_completed_counter: tap.cardLastCompleted?.counter ?? null,
    repeat_of_tap_id: risk?.repeatOf ?? null,
    // Nothing is debited for a capped or repeated tap: it is charged zero.
    charged_currency: state === 'CAPPED' || state === 'REPEATED' ? tap.fare!.currencyCode : null,
    charged_minor: state === 'CAPPED' || state === 'REPEATED' ? '0' : null,
    received_at: String(now),
    updated_at: String(now),
  };
}

// --- reading taps back ---

/** Columns of a taps row, int64 ones as text. */
export const tapColumns = (db: Db) => [
  'id',
  'tap_id',
  'terminal_id',
  asText(db, 'terminal_sequence'),
  'card_id',
  'agreement_id',
  'fare_currency',
  asText(db, 'fare_minor'),
  asText(db, 'tapped_at'),
  asText(db, 'proof_counter'),
  'proof_terminal_random',
  'proof_mac',
  'state',
  'decline_reason',
  'deduction_id',
  'settlement_id',
  'charged_currency',
  asText(db, 'charged_minor'),
  asText(db, 'received_at'),
  'line_id',
  'service_day',
  asText(db, 'due_minor'),
  'debt_retries',
  asText(db, 'next_retry_at'),
  asText(db, 'recovered_at'),
  'clone_reason',
  'clock_flag',
  'reported_repeat_of_tap_id',
  'card_last_completed_tap_id',
  asText(db, 'card_last_completed_counter'),
  'repeat_of_tap_id',
];

export interface TapRow {
  id: number;
  tap_id: string;
  terminal_id: string;
  terminal_sequence: string;
  card_id: string;
  agreement_id: string;
  fare_currency: string;
  fare_minor: string;
  tapped_at: string;
  proof_counter: string;
  proof_terminal_random: Buffer;
  proof_mac: Buffer;
  state: TapStateName;
  decline_reason: string | null;
  deduction_id: string | null;
  settlement_id: string | null;
  charged_currency: string | null;
  charged_minor: string | null;
  received_at: string;
  line_id: string | null;
  service_day: string | null;
  due_minor: string | null;
  debt_retries: number | string;
  next_retry_at: string | null;
  recovered_at: string | null;
  clone_reason: string | null;
  clock_flag: string | null;
  reported_repeat_of_tap_id: string | null;
  card_last_completed_tap_id: string | null;
  card_last_completed_counter: string | null;
  repeat_of_tap_id: string | null;
}

/** The tap exactly as the terminal reported it. */
export function reportedTap(row: TapRow): Tap {
  return {
    tapId: row.tap_id,
    terminalId: row.terminal_id,
    terminalSequence: row.terminal_sequence,
    cardId: row.card_id,
    agreementId: row.agreement_id,
    fare: { currencyCode: row.fare_currency, minorUnits: row.fare_minor },
    tappedAt: new Date(Number(row.tapped_at)),
    proof: {
      cardId: row.card_id,
      counter: row.proof_counter,
      terminalId: row.terminal_id,
      terminalSequence: row.terminal_sequence,
      terminalRandom: Buffer.from(row.proof_terminal_random),
      mac: Buffer.from(row.proof_mac),
    },
    ...(row.line_id ? { lineId: row.line_id } : {}),
    ...(row.reported_repeat_of_tap_id ? { repeatOfTapId: row.reported_repeat_of_tap_id } : {}),
    ...(row.card_last_completed_tap_id !== null ? { cardLastCompleted: { tapId: row.card_last_completed_tap_id, counter: row.card_last_completed_counter! } } : {}),
  };
}

/** IssuerTaps for rows, with their state history (oldest first). */
export async function issuerTaps(db: Db, rows: TapRow[]): Promise<IssuerTap[]> {
  const history = new Map<string, { state: TapState; changedAt: Date }[]>();
  for (const ids of chunks(rows.map((r) => r.tap_id))) {
    const changes = await db('tap_state_changes').whereIn('tap_id', ids).orderBy('id').select('tap_id', 'state', asText(db, 'changed_at'));
    for (const c of changes) {
      const list = history.get(c.tap_id) ?? [];
      list.push({ state: TAP_STATES[c.state as TapStateName], changedAt: new Date(Number(c.changed_at)) });
      history.set(c.tap_id, list);
    }
  }
  return rows.map((row) => ({
    tap: reportedTap(row),
    state: TAP_STATES[row.state],
    declineReason: row.decline_reason ?? '',
    deductionId: row.deduction_id ?? '',
    settlementId: row.settlement_id ?? '',
    charged: row.charged_minor !== null ? { currencyCode: row.charged_currency!, minorUnits: row.charged_minor } : undefined,
    receivedAt: new Date(Number(row.received_at)),
    history: history.get(row.tap_id) ?? [],
    amountDue: row.due_minor !== null ? { currencyCode: row.fare_currency, minorUnits: row.due_minor } : undefined,
    serviceDay: row.service_day ?? '',
    recovered: row.recovered_at !== null,
    debtRetries: Number(row.debt_retries),
    nextRetryAt: row.state === 'DECLINED' && row.next_retry_at !== null ? new Date(Number(row.next_retry_at)) : undefined,
    cloneSuspected: row.clone_reason !== null,
    cloneReason: row.clone_reason ?? '',
    clockFlag: row.clock_flag ?? '',
    repeatOfTapId: row.repeat_of_tap_id ?? '',
  }));
}
