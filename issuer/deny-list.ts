// The deny list: cards terminals must decline offline, each with the reasons
// it is listed for (DEBT, LOST, REVOKED, CLONED). Every change is appended to
// a log under the next version, in the same transaction as the change that
// caused it; terminals follow the log by version (WatchDenyList streams it,
// ListDenyListChanges pages it) and so hold an exact copy.
import { asText, isPostgres, type Db } from '../common/db.js';
import { Violations } from '../common/validate.js';
import {
  DenyListAction,
  DenyListReason,
  type AddToDenyListRequest,
  type AddToDenyListResponse,
  type DenyListChange,
  type DenyListEntry,
  type ListDenyListChangesRequest,
  type ListDenyListChangesResponse,
  type RemoveFromDenyListRequest,
  type RemoveFromDenyListResponse,
  type WatchDenyListRequest,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import type { IssuerContext } from './context.js';

export type DenyReason = 'DEBT' | 'LOST' | 'REVOKED' | 'CLONED';

export const DENY_REASONS: Record<DenyReason, DenyListReason> = {
  DEBT: DenyListReason.DENY_LIST_REASON_DEBT,
  LOST: DenyListReason.DENY_LIST_REASON_LOST,
  REVOKED: DenyListReason.DENY_LIST_REASON_REVOKED,
  CLONED: DenyListReason.DENY_LIST_REASON_CLONED,
};
const REASON_NAMES = new Map(Object.entries(DENY_REASONS).map(([name, value]) => [value, name as DenyReason]));

export const DEFAULT_CHANGES_PAGE = 1000;
export const MAX_CHANGES_PAGE = 5000;
/** The PostgreSQL channel a writer NOTIFYs (in its transaction, so on commit) with the version it logged; issuer/deny-list-feed.ts LISTENs. */
export const DENY_LIST_CHANNEL = 'tapcredit_deny_list';

const parseReasons = (text: string): DenyReason[] => (text ? (text.split(',') as DenyReason[]) : []);

/** The card's current reasons, in a stable order. */
export async function cardReasons(db: Db, cardId: string): Promise<DenyReason[]> {
  const rows = await db('deny_list_entries').where({ card_id: cardId }).orderBy('reason').select('reason');
  return rows.map((r: { reason: DenyReason }) => r.reason);
}

async function nextVersion(trx: Db): Promise<string> {
  // The update takes the head row's lock (PostgreSQL): writers queue here, so
  // versions commit in order and a reader never sees version n+1 before n.
  await trx('deny_list_head').where({ id: 1 }).increment('version', 1);
  const head = await trx('deny_list_head').where({ id: 1 }).first(asText(trx, 'version'));
  return head.version;
}

async function appendChange(trx: Db, cardId: string, action: 'ADD' | 'REMOVE', reason: DenyReason, now: number): Promise<string> {
  const version = await nextVersion(trx);
  const reasons = await cardReasons(trx, cardId);
  await trx('deny_list_changes').insert({ version, card_id: cardId, action, reason, reasons_after: reasons.join(','), changed_at: String(now) });
  // Other replicas' feeds hear of it when (and only if) the transaction commits.
  if (isPostgres(trx)) await trx.raw('SELECT pg_notify(?, ?)', [DENY_LIST_CHANNEL, version]);
  return version;
}

/** Lists the card for the reason inside trx; false (nothing logged) when it already was. */
export async function addReason(trx: Db, cardId: string, reason: DenyReason, now: number): Promise<boolean> {
  if (await trx('deny_list_entries').where({ card_id: cardId, reason }).first('reason')) return false;
  await trx('deny_list_entries').insert({ card_id: cardId, reason, listed_at: String(now) });
  await appendChange(trx, cardId, 'ADD', reason, now);
  return true;
}

/** Removes the reason from the card's listing inside trx; false (nothing logged) when it was not there. */
export async function removeReason(trx: Db, cardId: string, reason: DenyReason, now: number): Promise<boolean> {
  const removed = await trx('deny_list_entries').where({ card_id: cardId, reason }).delete();
  if (removed === 0) return false;
  await appendChange(trx, cardId, 'REMOVE', reason, now);
  return true;
}

export async function headVersion(db: Db): Promise<string> {
  return (await db('deny_list_head').where({ id: 1 }).first(asText(db, 'version'))).version;
}

/** The card's listing as the API shows it. */
export async function denyListEntry(db: Db, cardId: string): Promise<DenyListEntry> {
  const rows = await db('deny_list_entries').where({ card_id: cardId }).orderBy('reason').select('reason', asText(db, 'listed_at'));
  const oldest = rows.reduce((min: number | undefined, r: { listed_at: string }) => Math.min(min ?? Infinity, Number(r.listed_at)), undefined);
  return {
    cardId,
    reasons: rows.map((r: { reason: DenyReason }) => DENY_REASONS[r.reason]),
    listedAt: oldest === undefined ? undefined : new Date(oldest),
  };
}

/** Changes after fromVersion, oldest first, at most limit. */
export async function changesAfter(db: Db, fromVersion: bigint, limit: number): Promise<DenyListChange[]> {
  const rows = await db('deny_list_changes')
    .where('version', '>', fromVersion.toString())
    // Qualified: a bare "version" would name the CAST(... AS TEXT) output column below and sort "10" before "4".
    .orderBy('deny_list_changes.version')
    .limit(limit)
    .select(asText(db, 'version'), 'card_id', 'action', 'reason', 'reasons_after', asText(db, 'changed_at'));
  return rows.map((r: { version: string; card_id: string; action: string; reason: DenyReason; reasons_after: string; changed_at: string }) => ({
    version: r.version,
    cardId: r.card_id,
    action: r.action === 'ADD' ? DenyListAction.DENY_LIST_ACTION_ADD : DenyListAction.DENY_LIST_ACTION_REMOVE,
    reason: DENY_REASONS[r.reason],
    reasons: parseReasons(r.reasons_after).map((x) => DENY_REASONS[x]),
    changedAt: new Date(Number(r.changed_at)),
  }));
}

// --- RPCs ---

function parseFromVersion(v: Violations, value: string): bigint {
  let n = 0n;
  try {
    n = BigInt(value);
  } catch {
    v.add('from_version', 'must be an integer');
  }
  if (n < 0n) v.add('from_version', 'must not be negative');
  return n;
}

function validateListing(req: { cardId: string; reason: DenyListReason }): DenyReason {
  const v = new Violations();
  v.id('card_id', req.cardId);
  v.enumValue('reason', req.reason, [...REASON_NAMES.keys()]);
  v.throwIfAny();
  return REASON_NAMES.get(req.reason)!;
}

export async function addToDenyList(ctx: IssuerContext, req: AddToDenyListRequest): Promise<AddToDenyListResponse> {
  const reason = validateListing(req);
  const changed = await ctx.db.transaction((trx) => addReason(trx, req.cardId, reason, ctx.now().getTime()));
  if (changed) {
    ctx.denyListFeed?.notify();
    ctx.log.info({ cardId: req.cardId, reason }, 'card listed');
  }
  return { entry: await denyListEntry(ctx.db, req.cardId), version: await headVersion(ctx.db) };
}

export async function removeFromDenyList(ctx: IssuerContext, req: RemoveFromDenyListRequest): Promise<RemoveFromDenyListResponse> {
  const reason = validateListing(req);
  const changed = await ctx.db.transaction((trx) => removeReason(trx, req.cardId, reason, ctx.now().getTime()));
  if (changed) {
    ctx.denyListFeed?.notify();
    ctx.log.info({ cardId: req.cardId, reason }, 'card reason unlisted');
  }
  return { entry: await denyListEntry(ctx.db, req.cardId), version: await headVersion(ctx.db) };
}

/** A page of changes, or a reset when the caller is ahead of the log (the issuer's log was restored from an older copy). */
async function page(db: Db, from: bigint, limit: number): Promise<{ changes: DenyListChange[]; headVersion: string; reset: boolean }> {
  const head = await headVersion(db);
  const reset = from > BigInt(head);
  const changes = await changesAfter(db, reset ? 0n : from, limit);
  return { changes, headVersion: head, reset };
}

export async function listDenyListChanges(ctx: IssuerContext, req: ListDenyListChangesRequest): Promise<ListDenyListChangesResponse> {
  const v = new Violations();
  const from = parseFromVersion(v, req.fromVersion);
  if (req.pageSize < 0) v.add('page_size', 'must not be negative');
  v.throwIfAny();
  const limit = req.pageSize === 0 ? DEFAULT_CHANGES_PAGE : Math.min(req.pageSize, MAX_CHANGES_PAGE);
  return page(ctx.db, from, limit);
}

/** Validates a WatchDenyList request; throws INVALID_ARGUMENT. */
export function watchFromVersion(req: WatchDenyListRequest): bigint {
  const v = new Violations();
  const from = parseFromVersion(v, req.fromVersion);
  if (req.terminalId) v.id('terminal_id', req.terminalId);
  v.throwIfAny();
  return from;
}
