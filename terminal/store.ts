// The terminal's durable store: accepted taps (the outbox the forwarder
// drains), the deny list the terminal holds, and the terminal sequence.
import { asText, toNumber, type Db } from '../common/db.js';
import { GroupCommit } from '../common/group-commit.js';
import { denyListReasonToJSON, type DenyListChange } from '../gen/tapcredit/issuer/v1/issuer.js';
import { Tap } from '../gen/tapcredit/type/v1/tap.js';

export interface TerminalCounts {
  acceptedTapCount: number;
  /** Taps the issuer has not acknowledged, held ones included. */
  unsentTapCount: number;
  /** Unsent taps held back for an operator (see markHeld). */
  heldTapCount: number;
  lastForwardedAt: Date | undefined;
  denyListVersion: string;
  denyListSize: number;
}

export interface StoreOptions {
  /** Test hook: ms each commit is held before it completes, as a slow disk's fsync holds it (a slow disk fault). */
  commitDelayMs?: () => number;
}

/** What the terminal remembers of a card's last accepted tap here, for the repeat rule (decision.ts repeatOf). */
export interface RecentTap {
  tapId: string;
  /** The tap's proof counter: the card's counter after its debit. */
  counter: bigint;
  /** Epoch ms, by the terminal's clock. */
  tappedAt: number;
  /** Set when the tap is itself a repeat. */
  repeatOf?: string;
}

/** Most taps committed in one group commit. */
const MAX_GROUP = 1000;
/** Rows per INSERT statement (9 columns each: far below the bind-parameter limits). */
const ROWS_PER_INSERT = 400;

const recentTap = (tap: Tap): RecentTap => ({
  tapId: tap.tapId,
  counter: BigInt(tap.proof!.counter),
  tappedAt: tap.tappedAt!.getTime(),
  ...(tap.repeatOfTapId ? { repeatOf: tap.repeatOfTapId } : {}),
});

export class TerminalStore {
  /** Accepted tap rows, committed in groups (see recordTap). */
  private readonly taps = new GroupCommit<Record<string, unknown>, void>({
    maxWeight: MAX_GROUP,
    commit: async (rows) => {
      await this.db.transaction(async (trx) => {
        for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) await trx('taps').insert(rows.slice(i, i + ROWS_PER_INSERT));
        await this.slowDisk();
      });
      return rows.map(() => undefined);
    },
  });

  private constructor(
    readonly db: Db,
    private next: bigint,
    /**
     * The cards on the deny list, mirrored in memory from the deny_list table
     * (the record) after each commit: a decision reads it without a query,
     * so it never waits behind the forwarder's commits on the one connection.
     */
    private readonly denied: Set<string>,
    /** Each card's last accepted tap here within the repeat window, read back from the taps table at start: it survives restarts. */
    private readonly recent: Map<string, RecentTap>,
    private readonly recentWindowMs: number,
    private readonly opts: StoreOptions = {},
  ) {}

  /** Groups of taps committed and the taps in them (a slow disk makes the groups grow). */
  get commitStats(): { groups: number; items: number } {
    return this.taps.stats;
  }

  private async slowDisk(): Promise<void> {
    const ms = this.opts.commitDelayMs?.() ?? 0;
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }

  /** Opens the store; the next sequence continues after the highest one stored. */
  static async open(db: Db, opts: StoreOptions & { recentWindowMs?: number; now?: () => number } = {}): Promise<TerminalStore> {
    const [row] = await db('taps').select(db.raw('CAST(MAX(sequence) AS TEXT) AS max_sequence'));
    const max = row?.max_sequence == null ? 0n : BigInt(row.max_sequence);
    const denied = new Set<string>((await db('deny_list').select('card_id')).map((r: { card_id: string }) => r.card_id));
    const windowMs = opts.recentWindowMs ?? 60_000;
    const recent = new Map<string, RecentTap>();
    const since = (opts.now?.() ?? Date.now()) - windowMs;
    // In sequence order, so each card ends with its last tap.
    const rows = await db('taps').where('tapped_at', '>=', String(since)).orderBy('sequence', 'asc').select('card_id', 'tap');
    for (const r of rows as { card_id: string; tap: Buffer }[]) recent.set(r.card_id, recentTap(Tap.decode(r.tap)));
    return new TerminalStore(db, max + 1n, denied, recent, windowMs, opts);
  }

  /** The card's last accepted tap here, when it is within the repeat window of `now` (epoch ms). */
  lastTapOf(cardId: string, now: number): RecentTap | undefined {
    const last = this.recent.get(cardId);
    return last && now - last.tappedAt <= this.recentWindowMs ? last : undefined;
  }

  /** The sequence the next debit will carry. */
  peekSequence(): bigint {
    return this.next;
  }

  /**
   * Takes the next sequence for a card's zero-amount debit; the tap carries
   * it if the card is accepted. Synchronous, so two concurrent PresentCard
   * calls never take the same one. The debit (the card's MAC covers the
   * sequence) goes out before the decision, so a card that then fails or
   * leaves the field leaves a gap: accepted taps carry increasing
   * sequences, consecutive while every debited card is accepted and every
   * accepted tap commits (a failed commit, on a full disk say, leaves one too).
   * A gap is therefore no sign of a lost tap: an accepted tap is always stored.
   */
  reserveSequence(): bigint {
    const sequence = this.next;
    this.next += 1n;
    return sequence;
  }

  /**
   * Stores an accepted tap durably; resolves once it is committed. Taps
   * accepted during a commit share the next one (group commit), in the order
   * their sequences were claimed.
   */
  async recordTap(tap: Tap): Promise<void> {
    // Remembered at once, so a presentation racing this commit sees it; forgotten again if the commit fails.
    const before = this.recent.get(tap.cardId);
    this.remember(tap);
    try {
      await this.commitTap(tap);
    } catch (err) {
      if (this.recent.get(tap.cardId)?.tapId === tap.tapId) {
        if (before) this.recent.set(tap.cardId, before);
        else this.recent.delete(tap.cardId);
      }
      throw err;
    }
  }

  private remember(tap: Tap): void {
    this.recent.set(tap.cardId, recentTap(tap));
    // Cards whose last tap left the window are forgotten now and then, so the map holds about a window's cards.
    if (this.recent.size > 10_000 && this.recent.size % 1000 === 0) {
      const since = Date.now() - this.recentWindowMs;
      for (const [cardId, t] of this.recent) if (t.tappedAt < since) this.recent.delete(cardId);
    }
  }

  private commitTap(tap: Tap): Promise<void> {
    return this.taps.submit({
      tap_id: tap.tapId,
      sequence: tap.terminalSequence,
      card_id: tap.cardId,
      fare_minor_units: tap.fare!.minorUnits,
      fare_currency: tap.fare!.currencyCode,
      tapped_at: String(tap.tappedAt!.getTime()),
      tap: Buffer.from(Tap.encode(tap).finish()),
      acked_at: null,
      repeat_of_tap_id: tap.repeatOfTapId ?? null,
    });
  }

  /** Taps the issuer has not acknowledged yet, oldest first: those to send, or with includeHeld the held ones too. */
  async unsentTaps(limit: number, opts: { includeHeld?: boolean } = {}): Promise<Tap[]> {
    const query = this.db('taps').whereNull('acked_at');
    if (!opts.includeHeld) query.whereNull('held_reason');
    const rows = await query.orderBy('sequence', 'asc').limit(limit).select('tap');
    return rows.map((r: { tap: Buffer }) => Tap.decode(r.tap));
  }

  /**
   * Holds unsent taps back for an operator: the issuer will not take them
   * under their ids, so sending them again cannot help. They stay in the
   * store, unacknowledged, and are no longer sent.
   */
  async markHeld(tapIds: string[], reason: string, at: Date): Promise<void> {
    if (tapIds.length === 0) return;
    await this.db('taps').whereIn('tap_id', tapIds).whereNull('acked_at').whereNull('held_reason').update({ held_reason: reason, held_at: String(at.getTime()) });
  }

  /** Ids of the held taps, oldest first. */
  async heldTapIds(limit: number): Promise<string[]> {
    const rows = await this.db('taps').whereNull('acked_at').whereNotNull('held_reason').orderBy('sequence', 'asc').limit(limit).select('tap_id');
    return rows.map((r: { tap_id: string }) => r.tap_id);
  }

  /** Marks taps as held by the issuer; they are never sent again. */
  async markAcked(tapIds: string[], at: Date): Promise<void> {
    if (tapIds.length === 0) return;
    await this.db.transaction(async (trx) => {
      await trx('taps').whereIn('tap_id', tapIds).whereNull('acked_at').update({ acked_at: String(at.getTime()) });
      await trx('terminal_meta').where({ id: 1 }).update({ last_forwarded_at: String(at.getTime()) });
      await this.slowDisk();
    });
  }

  /** Version of the deny list held: the last issuer change applied. */
  async denyListVersion(): Promise<bigint> {
    const meta = await this.db('terminal_meta').where({ id: 1 }).first(asText(this.db, 'deny_list_version'));
    return BigInt(meta?.deny_list_version ?? '0');
  }

  /**
   * Applies the issuer's deny-list changes in one transaction. Changes at or
   * below the version held are skipped (resent after a reconnect), so
   * applying is idempotent; a change that is not the next version is refused
   * (the caller syncs again from the version held). With reset, the copy held
   * is dropped first. Resolves to the version held afterwards.
   */
  async applyDenyListChanges(changes: DenyListChange[], reset = false): Promise<bigint> {
    // What the commit does to each card, mirrored in memory once it has committed.
    const listed = new Map<string, boolean>();
    const held = await this.db.transaction(async (trx) => {
      if (reset) {
        await trx('deny_list').delete();
        await trx('terminal_meta').where({ id: 1 }).update({ deny_list_version: '0' });
      }
      const meta = await trx('terminal_meta').where({ id: 1 }).first(asText(trx, 'deny_list_version'));
      let version = BigInt(meta?.deny_list_version ?? '0');
      for (const change of changes) {
        const v = BigInt(change.version);
        if (v <= version) continue;
        if (v !== version + 1n) throw new Error(`deny-list change ${v} does not follow the version held (${version})`);
        const reasons = change.reasons.map((r) => denyListReasonToJSON(r).replace(/^DENY_LIST_REASON_/, ''));
        listed.set(change.cardId, reasons.length > 0);
        if (reasons.length === 0) await trx('deny_list').where({ card_id: change.cardId }).delete();
        else {
          await trx('deny_list')
            .insert({ card_id: change.cardId, reason: reasons.join(','), version: v.toString() })
            .onConflict('card_id')
            .merge(['reason', 'version']);
        }
        version = v;
      }
      await trx('terminal_meta').where({ id: 1 }).update({ deny_list_version: version.toString() });
      return version;
    });
    if (reset) this.denied.clear();
    for (const [cardId, isListed] of listed) {
      if (isListed) this.denied.add(cardId);
      else this.denied.delete(cardId);
    }
    return held;
  }

  /**
   * Puts a card on the deny list the terminal holds and bumps the list's
   * version; returns the new version. Listing a card already listed updates
   * its reason. (The issuer's changes arrive through applyDenyListChanges;
   * this is for tests and tools that list a card at the terminal alone.)
   */
  async denyCard(cardId: string, reason: string): Promise<string> {
    const version = await this.db.transaction(async (trx) => {
      const meta = await trx('terminal_meta').where({ id: 1 }).first(asText(trx, 'deny_list_version'));
      const next = (BigInt(meta?.deny_list_version ?? '0') + 1n).toString();
      await trx('terminal_meta').where({ id: 1 }).update({ deny_list_version: next });
      await trx('deny_list').insert({ card_id: cardId, reason, version: next }).onConflict('card_id').merge(['reason', 'version']);
      return next;
    });
    this.denied.add(cardId);
    return version;
  }

  isDenyListed(cardId: string): boolean {
    return this.denied.has(cardId);
  }

  async counts(): Promise<TerminalCounts> {
    const db = this.db;
    const [accepted] = await db('taps').count({ n: '*' });
    const [unsent] = await db('taps').whereNull('acked_at').count({ n: '*' });
    const [held] = await db('taps').whereNull('acked_at').whereNotNull('held_reason').count({ n: '*' });
    const [denied] = await db('deny_list').count({ n: '*' });
    const meta = await db('terminal_meta')
      .where({ id: 1 })
      .first(asText(db, 'deny_list_version'), asText(db, 'last_forwarded_at'));
    return {
      acceptedTapCount: toNumber(accepted.n),
      unsentTapCount: toNumber(unsent.n),
      heldTapCount: toNumber(held.n),
      lastForwardedAt: meta?.last_forwarded_at == null ? undefined : new Date(Number(meta.last_forwarded_at)),
      denyListVersion: meta?.deny_list_version ?? '0',
      denyListSize: toNumber(denied.n),
    };
  }
}
