// The deny list: cards terminals must decline offline, each with the reasons
// it is listed for (DEBT, LOST, REVOKED, CLONED). Every change is appended to
// a log under the next version, in the same transaction as the change that
// caused it; terminals follow the log by version (WatchDenyList streams it,
// ListDenyListChanges pages it) and so hold an exact copy.
import type { ServerWritableStream } from '@grpc/grpc-js';
import { asText, type Db } from '../common/db.js';
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
  type WatchDenyListResponse,
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
/** How often the feed checks the log's head for changes it was not told about (made by another replica). */
export const FEED_POLL_MS = 1000;

/**
 * Wakes the watch streams of this process after a committed change. Callers
 * notify after their transaction commits; the feed also polls the log's head
 * version (one query per interval for all streams), so a change made by
 * another process sharing the database reaches the streams too.
 */
export class DenyListFeed {
  private readonly listeners = new Set<() => void>();
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private lastHead: string | undefined;

  /** Starts polling the head version of db every pollMs. */
  start(db: Db, pollMs = FEED_POLL_MS): void {
    const tick = async () => {
      try {
        const head = await headVersion(db);
        if (this.lastHead !== undefined && head !== this.lastHead) this.notify();
        this.lastHead = head;
      } catch {
        // The database is closing or busy: the next tick tries again.
      }
      if (!this.closed) this.timer = setTimeout(tick, pollMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  notify(): void {
    for (const listener of this.listeners) listener();
  }

  /** Returns the unsubscribe function, or undefined once the feed is closed. */
  subscribe(listener: () => void): (() => void) | undefined {
    if (this.closed) return undefined;
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Ends every stream (they see the feed closed on their next wake-up), so the server can shut down. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.notify();
    this.listeners.clear();
  }
}

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

/** A watch stream sends an empty message after this much silence, so a terminal can tell a quiet list from a dead connection. */
export const WATCH_HEARTBEAT_MS = 15_000;

/**
 * Serves one WatchDenyList stream until the client cancels or the feed
 * closes: sends what the caller misses (the first message always, even
 * empty, so the caller knows it is up to date), then whatever is new each
 * time the feed wakes it, and an empty heartbeat after heartbeatMs of
 * silence. Writes respect backpressure. Resolves when the stream is over;
 * rejects on a database error.
 */
export async function serveDenyListWatch(
  ctx: IssuerContext,
  feed: DenyListFeed,
  call: ServerWritableStream<WatchDenyListRequest, WatchDenyListResponse>,
  from: bigint,
  heartbeatMs = WATCH_HEARTBEAT_MS,
): Promise<void> {
  let wake: (() => void) | undefined;
  let dirty = true;
  let over = false;
  const poke = () => {
    dirty = true;
    wake?.();
  };
  const finish = () => {
    over = true;
    wake?.();
  };
  /** Waits for an event, a notification or the end of the stream, at most ms. */
  const pause = (ms: number, event?: string) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (event) call.off(event, done);
        wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      if (event) call.once(event, done);
      wake = done;
      if (over || feed.isClosed || (!event && dirty)) done();
    });
  const unsubscribe = feed.subscribe(poke);
  call.on('cancelled', finish);
  call.on('close', finish);
  const ended = () => over || call.cancelled || feed.isClosed;
  try {
    let version = from;
    let mustSend = true; // the first message, then each heartbeat
    while (!ended()) {
      if (dirty || mustSend) {
        dirty = false;
        // Drain everything new, page by page, before waiting again.
        for (;;) {
          const p = await page(ctx.db, version, DEFAULT_CHANGES_PAGE);
          if (ended()) return;
          if (p.changes.length === 0 && !mustSend && !p.reset) break;
          if (p.reset) {
            ctx.log.warn({ terminalId: call.request.terminalId, from: String(version), head: p.headVersion }, 'deny-list watcher is ahead of the log; resetting it');
          }
          mustSend = false;
          if (p.changes.length > 0) version = BigInt(p.changes[p.changes.length - 1].version);
          else if (p.reset) version = 0n;
          if (!call.write(p)) {
            while (call.writableNeedDrain && !ended()) await pause(heartbeatMs, 'drain');
          }
          if (p.changes.length < DEFAULT_CHANGES_PAGE) break;
        }
      }
      const before = dirty;
      await pause(heartbeatMs);
      // Woken by the timer, not by a change: time for a heartbeat.
      if (!before && !dirty && !ended()) mustSend = true;
    }
  } finally {
    unsubscribe?.();
    if (!call.cancelled && !call.writableEnded) call.end();
  }
}
