// The tap life cycle at the issuer: the states a tap can be in, the moves
// between them, and the one guarded move every module uses. A move writes the
// tap's new state and its history row in the same transaction, and only
// moves taps that are still in the state the caller expects, so a concurrent
// sender (another replica, a retry) can never store an outcome twice.
//
//   arrival ─▶ RECEIVED ─▶ DEDUCTING ─▶ DEDUCTED ─▶ SETTLED
//          │                  │  │          ▲
//          │                  │  └▶ DECLINED ┤ (a debt, recovered by a retry)
//          │                  │        ▲ │   │
//          │                  │        │ └▶ UNCOLLECTABLE (the authorizer refused a retry for good;
//          │                  │        └──── a retry the rider asks for may find it collectable again)
//          │                  └▶ REJECTED
//          ├▶ REJECTED (not authenticated, card not enrolled)
//          ├▶ CAPPED (nothing due under the fare cap)
//          └▶ REPEATED (the same ride as an earlier tap: nothing due)
import { chunks, type Db } from '../common/db.js';
import { TapState } from '../gen/tapcredit/issuer/v1/issuer.js';

/** Tap life-cycle states as stored (the TapState enum names without prefix). */
export type TapStateName = 'RECEIVED' | 'DEDUCTING' | 'DEDUCTED' | 'DECLINED' | 'SETTLED' | 'REJECTED' | 'CAPPED' | 'UNCOLLECTABLE' | 'REPEATED';

export const TAP_STATES: Record<TapStateName, TapState> = {
  RECEIVED: TapState.TAP_STATE_RECEIVED,
  DEDUCTING: TapState.TAP_STATE_DEDUCTING,
  DEDUCTED: TapState.TAP_STATE_DEDUCTED,
  DECLINED: TapState.TAP_STATE_DECLINED,
  SETTLED: TapState.TAP_STATE_SETTLED,
  REJECTED: TapState.TAP_STATE_REJECTED,
  CAPPED: TapState.TAP_STATE_CAPPED,
  UNCOLLECTABLE: TapState.TAP_STATE_UNCOLLECTABLE,
  REPEATED: TapState.TAP_STATE_REPEATED,
};

/** States a tap is stored in when it arrives. */
export const ARRIVAL_STATES: readonly TapStateName[] = ['RECEIVED', 'REJECTED', 'CAPPED', 'REPEATED'];

/** The allowed moves: from each state, the states it may go to. */
export const TRANSITIONS: Readonly<Record<TapStateName, readonly TapStateName[]>> = {
  RECEIVED: ['DEDUCTING'],
  DEDUCTING: ['DEDUCTED', 'DECLINED', 'REJECTED'],
  DEDUCTED: ['SETTLED'],
  DECLINED: ['DEDUCTED', 'UNCOLLECTABLE'],
  UNCOLLECTABLE: ['DEDUCTED', 'DECLINED'],
  SETTLED: [],
  REJECTED: [],
  CAPPED: [],
  REPEATED: [],
};

/** States a tap rests in for good unless someone acts (the end of its life, or a debt an operator must look at). */
export const FINAL_STATES: readonly TapStateName[] = (Object.keys(TRANSITIONS) as TapStateName[]).filter((s) => TRANSITIONS[s].length === 0);

/** States in which the rider owes the tap's amount due. */
export const DEBT_STATES: readonly TapStateName[] = ['DECLINED', 'UNCOLLECTABLE'];

export const canMove = (from: TapStateName, to: TapStateName): boolean => TRANSITIONS[from].includes(to);

export class IllegalTapMove extends Error {
  constructor(from: TapStateName, to: TapStateName) {
    super(`a tap cannot move from ${from} to ${to}`);
  }
}

/** Per-tap column values of a move (e.g. each tap's deduction id), beside the columns every moved tap gets. */
export type PerTapColumns = ReadonlyMap<string, Record<string, string | null>>;

export interface Move {
  from: TapStateName | readonly TapStateName[];
  to: TapStateName;
  tapIds: readonly string[];
  /** Epoch ms of the move: the history row's time and the row's updated_at. */
  now: number;
  /** Columns set on every moved tap. */
  set?: Record<string, unknown>;
  /** Columns set per tap. */
  perTap?: PerTapColumns;
}

/**
 * Moves the taps that are still in `from` to `to`, with their history rows,
 * inside trx; refuses a move the table does not allow. Resolves to the ids
 * that moved (a tap another sender already moved is left alone).
 */
export async function moveTaps(trx: Db, move: Move): Promise<string[]> {
  const froms = typeof move.from === 'string' ? [move.from] : move.from;
  for (const from of froms) if (!canMove(from, move.to)) throw new IllegalTapMove(from, move.to);
  const moved: string[] = [];
  for (const ids of chunks(move.tapIds)) {
    const rows: { tap_id: string }[] = await trx('taps')
      .whereIn('tap_id', ids)
      .whereIn('state', froms)
      .update({ ...move.set, ...perTapCases(trx, ids, move.perTap), state: move.to, updated_at: String(move.now) })
      .returning('tap_id');
    if (rows.length === 0) continue;
    const ok = rows.map((r) => r.tap_id);
    await trx('tap_state_changes').insert(ok.map((tap_id) => ({ tap_id, state: move.to, changed_at: String(move.now) })));
    moved.push(...ok);
  }
  return moved;
}

/** Records the arrival of new taps: their first history row (the taps rows are inserted by the caller). */
export async function recordArrivals(trx: Db, taps: readonly { tapId: string; state: TapStateName }[], now: number): Promise<void> {
  for (const t of taps) if (!ARRIVAL_STATES.includes(t.state)) throw new Error(`a tap cannot arrive in ${t.state}`);
  for (const part of chunks(taps)) {
    await trx('tap_state_changes').insert(part.map((t) => ({ tap_id: t.tapId, state: t.state, changed_at: String(now) })));
  }
}

/** `CASE tap_id WHEN ... THEN ... END` per column, for the taps of ids that have a value. */
function perTapCases(trx: Db, ids: readonly string[], perTap: PerTapColumns | undefined): Record<string, unknown> {
  if (!perTap) return {};
  const columns = new Set<string>();
  for (const id of ids) for (const c of Object.keys(perTap.get(id) ?? {})) columns.add(c);
  const out: Record<string, unknown> = {};
  for (const column of columns) {
    const pairs = ids.filter((id) => perTap.get(id)?.[column] !== undefined).map((id) => [id, perTap.get(id)![column]] as const);
    out[column] = trx.raw(`CASE tap_id ${pairs.map(() => 'WHEN ? THEN ?').join(' ')} ELSE ?? END`, [...pairs.flat(), column]);
  }
  return out;
}
