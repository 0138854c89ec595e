// Drives every WatchDenyList stream of one issuer process from one reader.
// The reader follows the deny-list log (woken by this process's writers, by
// PostgreSQL NOTIFY from other replicas, and by a slow poll as a fallback)
// and keeps a bounded window of the latest changes in memory, each batch it
// reads encoded once: the same bytes go to every stream that is current, so
// a change costs one database read and one encoding whatever the number of
// streams. A stream behind the window pages from the database until it
// reaches it. Heartbeats come from one timer and cost no query. A stream
// whose client stops reading gets nothing more written (its memory is what
// was queued when it stopped) and is dropped after stallMs; the terminal
// resumes from the version it holds.
import pg from 'pg';
import type { Db } from '../common/db.js';
import type { Logger } from '../common/log.js';
import { WatchDenyListResponse, type DenyListChange } from '../gen/tapcredit/issuer/v1/issuer.js';
import { changesAfter, DEFAULT_CHANGES_PAGE, DENY_LIST_CHANNEL, headVersion } from './deny-list.js';

/** A watch stream sends an empty message after this much silence, so a terminal can tell a quiet list from a dead connection. */
export const WATCH_HEARTBEAT_MS = 15_000;
/** How often the reader looks at the log without being told of a change (a change of another process); PostgreSQL replicas are told through NOTIFY. */
export const FEED_POLL_MS = 1000;
export const FEED_POLL_MS_WITH_NOTIFY = 10_000;
/** A stream whose client takes nothing for this long is dropped. */
export const WATCH_STALL_MS = 30_000;
/** Changes kept in memory: a terminal reconnecting less than this many changes behind is served without a query. */
export const FEED_WINDOW = 10_000;

/** One WatchDenyList stream as the feed drives it (issuer/handlers.ts adapts the gRPC call). */
export interface WatchStream {
  /** Sends encoded WatchDenyListResponse bytes; false when the caller must wait for onDrain before writing more. */
  write(message: Buffer): boolean;
  /** Calls fn once, when the stream can take more. */
  onDrain(fn: () => void): void;
  /** Ends the stream with OK (the issuer is shutting down). */
  end(): void;
  /** Ends a stream whose client stopped reading: it sees RESOURCE_EXHAUSTED and resumes from its version. */
  drop(): void;
  /** Ends the stream with the error's status. */
  fail(err: unknown): void;
  /** For the logs. */
  readonly terminalId: string;
}

export interface DenyListFeedOptions {
  db: Db;
  log: Logger;
  /** postgres:// URL to LISTEN on for the changes of other replicas; none on SQLite. */
  listenUrl?: string;
  /** Polling of the log's head for changes nobody told this process of; 0 turns it off. Default FEED_POLL_MS, FEED_POLL_MS_WITH_NOTIFY with listenUrl. */
  pollMs?: number;
  heartbeatMs?: number;
  stallMs?: number;
  /** Changes kept in memory (default FEED_WINDOW). */
  window?: number;
}

/** Changes read together, and their message as every current stream gets it. */
interface Segment {
  /** The version before the first change. */
  from: bigint;
  /** The version of the last change. */
  to: bigint;
  changes: DenyListChange[];
  bytes: Buffer;
}

class Watcher {
  /** The last version sent (or that the caller said it holds). */
  version: bigint;
  sentFirst = false;
  wasReset = false;
  /** Tick of the last write, for heartbeats. */
  lastTick = 0;
  /** Time a write was refused; 0 while the stream takes writes. */
  blockedSince = 0;
  done = false;
  constructor(
    readonly stream: WatchStream,
    from: bigint,
  ) {
    this.version = from;
  }
}

const encode = (m: WatchDenyListResponse): Buffer => Buffer.from(WatchDenyListResponse.encode(m).finish());

export class DenyListFeed {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly heartbeatMs: number;
  private readonly stallMs: number;
  private readonly windowSize: number;
  private readonly pollMs: number;
  private readonly tickMs: number;
  /** The version the reader has read up to: every current stream holds it. */
  private version = 0n;
  private readonly segments: Segment[] = [];
  private windowChanges = 0;
  private readonly all = new Set<Watcher>();
  private readonly current = new Set<Watcher>();
  private ready: Promise<void> | undefined;
  private closed = false;
  private dirty = false;
  /** Highest version some process announced (NOTIFY): read while the reader is below it. */
  private announced = 0n;
  private pumping: Promise<void> | undefined;
  private ticks = 0;
  private tickTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private listener: pg.Client | undefined;
  private readonly listenUrl: string | undefined;
  private empty: { version: bigint; bytes: Buffer } | undefined;
  private caughtUp: { from: bigint; to: bigint; bytes: Buffer } | undefined;

  constructor(opts: DenyListFeedOptions) {
    this.db = opts.db;
    this.log = opts.log;
    this.listenUrl = opts.listenUrl;
    this.heartbeatMs = opts.heartbeatMs ?? WATCH_HEARTBEAT_MS;
    this.stallMs = opts.stallMs ?? WATCH_STALL_MS;
    this.windowSize = Math.max(1, opts.window ?? FEED_WINDOW);
    this.pollMs = opts.pollMs ?? (opts.listenUrl ? FEED_POLL_MS_WITH_NOTIFY : FEED_POLL_MS);
    this.tickMs = Math.max(10, Math.min(1000, this.heartbeatMs / 4, this.stallMs / 4));
  }

  /** Loads the window, then follows the log. */
  start(): Promise<void> {
    this.ready ??= (async () => {
      const head = BigInt(await headVersion(this.db));
      this.version = head > BigInt(this.windowSize) ? head - BigInt(this.windowSize) : 0n;
      this.announced = head;
      await this.pump();
      this.tickTimer = setInterval(() => this.tick(), this.tickMs);
      this.tickTimer.unref();
      if (this.pollMs > 0) this.schedulePoll();
      if (this.listenUrl) void this.listen(this.listenUrl, 0);
    })();
    return this.ready;
  }

  /** Streams open now. */
  get streams(): number {
    return this.all.size;
  }

  /**
   * Tells the reader the log has changed (after the writer's commit), or up
   * to which version (a NOTIFY's payload: nothing to read when it has it).
   */
  notify(version?: string): void {
    if (this.closed) return;
    if (version === undefined) this.dirty = true;
    else {
      let v: bigint;
      try {
        v = BigInt(version);
      } catch {
        v = this.version + 1n;
      }
      if (v <= this.version) return;
      if (v > this.announced) this.announced = v;
    }
    void this.pump();
  }

  /** Serves a stream from the version its caller holds until it ends. */
  watch(stream: WatchStream, from: bigint): { cancel(): void } {
    const w = new Watcher(stream, from);
    if (this.closed) {
      stream.end();
      return { cancel() {} };
    }
    this.all.add(w);
    void (this.ready ?? this.start()).then(
      () => this.catchUp(w),
      (err) => this.fail(w, err),
    );
    return { cancel: () => this.remove(w) };
  }

  /** Ends every stream, so the server can shut down at once. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.tickTimer);
    clearTimeout(this.pollTimer);
    clearTimeout(this.retryTimer);
    for (const w of this.all) {
      w.done = true;
      w.stream.end();
    }
    this.all.clear();
    this.current.clear();
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => {});
    await this.pumping?.catch(() => {});
  }

  // --- the reader ---

  /** Reads until the log holds nothing new; one pass at a time, a wake-up during a pass makes one more. */
  private pump(): Promise<void> {
    if (this.pumping) return this.pumping;
    const pass: Promise<void> = this.readAll().finally(() => {
      if (this.pumping === pass) this.pumping = undefined;
    });
    this.pumping = pass;
    return pass;
  }

  private async readAll(): Promise<void> {
    try {
      while (!this.closed && (this.dirty || this.announced > this.version)) {
        this.dirty = false;
        for (;;) {
          const changes = await changesAfter(this.db, this.version, DEFAULT_CHANGES_PAGE);
          if (this.closed) return;
          if (changes.length > 0) this.append(changes);
          if (changes.length < DEFAULT_CHANGES_PAGE) break;
        }
        // Announced but not there (a log restored from an older copy): the poll or the next change settles it.
        if (this.announced > this.version) this.announced = this.version;
      }
    } catch (err) {
      if (!this.closed) {
        this.log.warn({ err }, 'deny-list feed could not read the log; retrying');
        this.dirty = true;
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => void this.pump(), 1000);
      }
    }
  }

  private schedulePoll(): void {
    this.pollTimer = setTimeout(() => {
      this.dirty = true;
      void this.pump().finally(() => {
        if (!this.closed) this.schedulePoll();
      });
    }, this.pollMs);
    this.pollTimer.unref();
  }

  /** LISTENs on its own connection; after a lost connection, connects again and reads what it missed. */
  private async listen(url: string, failures: number): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: url });
    let lost = false;
    const reconnect = (err?: unknown) => {
      if (lost || this.closed) return;
      lost = true;
      if (this.listener === client) this.listener = undefined;
      client.end().catch(() => {});
      const delay = Math.min(5000, 200 * 2 ** Math.min(failures, 5));
      if (failures === 0) this.log.warn({ err: String(err) }, 'deny-list LISTEN connection lost; reconnecting');
      setTimeout(() => void this.listen(url, failures + 1), delay).unref();
    };
    client.on('error', reconnect);
    client.on('end', () => reconnect(new Error('connection ended')));
    client.on('notification', (n) => this.notify(n.payload));
    try {
      await client.connect();
      await client.query(`LISTEN ${DENY_LIST_CHANNEL}`);
    } catch (err) {
      reconnect(err);
      return;
    }
    if (this.closed) {
      await client.end().catch(() => {});
      return;
    }
    this.listener = client;
    failures = 0;
    // Changes made while this process was not listening.
    this.notify();
  }

  /** Adds what the reader read to the window and sends it, as one shared message, to every current stream. */
  private append(changes: DenyListChange[]): void {
    const to = BigInt(changes[changes.length - 1].version);
    const seg: Segment = { from: this.version, to, changes, bytes: encode({ changes, headVersion: to.toString(), reset: false }) };
    this.segments.push(seg);
    this.windowChanges += changes.length;
    while (this.segments.length > 1 && this.windowChanges - this.segments[0].changes.length >= this.windowSize) {
      this.windowChanges -= this.segments.shift()!.changes.length;
    }
    this.version = to;
    if (this.announced < to) this.announced = to;
    for (const w of this.current) {
      // Current streams hold seg.from: the shared bytes follow on without a gap.
      w.version = to;
      this.send(w, seg.bytes);
    }
  }

  // --- the streams ---

  /** Writes; a refused write takes the stream out of the current set until it drains. */
  private send(w: Watcher, bytes: Buffer): boolean {
    w.lastTick = this.ticks;
    w.sentFirst = true;
    if (w.stream.write(bytes)) return true;
    this.current.delete(w);
    w.blockedSince = Date.now();
    w.stream.onDrain(() => {
      w.blockedSince = 0;
      void this.catchUp(w);
    });
    return false;
  }

  private get windowStart(): bigint {
    return this.segments.length > 0 ? this.segments[0].from : this.version;
  }

  /** Brings a stream to the reader's version (from the window, or from the database when behind it), then makes it current. */
  private async catchUp(w: Watcher): Promise<void> {
    try {
      while (!w.done && !this.closed) {
        if (w.version === this.version) {
          if (!w.sentFirst && !this.send(w, this.emptyMessage())) return;
          this.current.add(w);
          return;
        }
        if (w.version > this.version) {
          // Ahead of the reader: a change of another replica not read yet, or a log restored from an older copy.
          this.dirty = true;
          await this.pump();
          if (w.done || this.closed) return;
          if (w.version > this.version) {
            // Reset once: still ahead after that, the reader cannot read the log; the caller retries later.
            if (w.wasReset) throw new Error('the deny-list reader is behind the log');
            w.wasReset = true;
            this.log.warn({ terminalId: w.stream.terminalId, from: String(w.version), head: String(this.version) }, 'deny-list watcher is ahead of the log; resetting it');
            w.version = 0n;
            const changes = await changesAfter(this.db, 0n, DEFAULT_CHANGES_PAGE);
            if (w.done || this.closed) return;
            const last = changes.length > 0 ? BigInt(changes[changes.length - 1].version) : 0n;
            w.version = last;
            if (!this.send(w, encode({ changes, headVersion: String(last > this.version ? last : this.version), reset: true }))) return;
          }
          continue;
        }
        let bytes: Buffer;
        if (w.version >= this.windowStart) {
          bytes = this.fromWindow(w.version);
          w.version = this.caughtUp!.to;
        } else {
          const changes = await changesAfter(this.db, w.version, DEFAULT_CHANGES_PAGE);
          if (w.done || this.closed) return;
          if (changes.length === 0) continue; // the window moved on meanwhile
          const last = BigInt(changes[changes.length - 1].version);
          bytes = encode({ changes, headVersion: String(last > this.version ? last : this.version), reset: false });
          w.version = last;
        }
        if (!this.send(w, bytes)) return;
      }
    } catch (err) {
      this.fail(w, err);
    }
  }

  /** The changes of the window after version, at most a page, as one message (kept for the next stream that asks for the same). */
  private fromWindow(version: bigint): Buffer {
    const c = this.caughtUp;
    if (c && c.from === version && c.to === this.version) return c.bytes;
    // The segment holding version + 1: segments are consecutive, so search by their ends.
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.segments[mid].to <= version) lo = mid + 1;
      else hi = mid;
    }
    const changes: DenyListChange[] = [];
    for (let i = lo; i < this.segments.length && changes.length < DEFAULT_CHANGES_PAGE; i++) {
      const seg = this.segments[i];
      const skip = version > seg.from ? Number(version - seg.from) : 0;
      for (let j = skip; j < seg.changes.length && changes.length < DEFAULT_CHANGES_PAGE; j++) changes.push(seg.changes[j]);
    }
    const to = BigInt(changes[changes.length - 1].version);
    const bytes = encode({ changes, headVersion: this.version.toString(), reset: false });
    this.caughtUp = { from: version, to, bytes };
    return bytes;
  }

  /** The empty message at the reader's version: a first message to a current caller, and the heartbeat. */
  private emptyMessage(): Buffer {
    if (this.empty?.version !== this.version) {
      this.empty = { version: this.version, bytes: encode({ changes: [], headVersion: this.version.toString(), reset: false }) };
    }
    return this.empty.bytes;
  }

  /** Heartbeats to current streams silent for heartbeatMs; drops streams that took nothing for stallMs. */
  private tick(): void {
    this.ticks++;
    const silentTicks = Math.max(1, Math.round(this.heartbeatMs / this.tickMs));
    const now = Date.now();
    for (const w of this.all) {
      if (w.blockedSince > 0) {
        if (now - w.blockedSince >= this.stallMs) {
          this.log.warn({ terminalId: w.stream.terminalId, version: String(w.version), stalledMs: now - w.blockedSince }, 'deny-list watcher takes nothing; dropping it');
          this.remove(w);
          w.stream.drop();
        }
      } else if (this.current.has(w) && this.ticks - w.lastTick >= silentTicks) {
        this.send(w, this.emptyMessage());
      }
    }
  }

  private remove(w: Watcher): void {
    w.done = true;
    this.all.delete(w);
    this.current.delete(w);
  }

  private fail(w: Watcher, err: unknown): void {
    if (w.done) return;
    this.remove(w);
    w.stream.fail(err);
  }
}
