// Keeps the terminal's copy of the issuer's deny list current, so a listed
// card is declined offline within seconds: a WatchDenyList stream from the
// version held pushes each change as the issuer makes it. When the stream
// breaks, the syncer catches up by polling ListDenyListChanges and opens the
// stream again after a backoff (doubling, with jitter, capped); an issuer
// that does not offer the stream is thus simply polled. A terminal that was
// offline resumes from its version and receives only what it missed.
import { Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../common/log.js';
import { callUnary } from '../common/rpc.js';
import type { IssuerServiceClient, WatchDenyListResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { TerminalStore } from './store.js';

export const DEFAULT_MIN_BACKOFF_MS = 200;
export const DEFAULT_MAX_BACKOFF_MS = 5_000;
/** No message (not even the issuer's heartbeat, every 15 s) for this long: the connection is presumed dead. */
export const DEFAULT_STALE_AFTER_MS = 45_000;
const POLL_PAGE = 1000;
const POLL_DEADLINE_MS = 10_000;

export interface DenyListSyncOptions {
  store: TerminalStore;
  client: IssuerServiceClient;
  terminalId: string;
  log: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  staleAfterMs?: number;
}

export class DenyListSyncer {
  /** When the issuer last confirmed the copy is current (a message of the stream or a poll). */
  syncedAt: Date | undefined;
  private running = false;
  private loop: Promise<void> | undefined;
  private call: ClientReadableStream<WatchDenyListResponse> | undefined;
  private wake: (() => void) | undefined;
  private failures = 0;

  constructor(private readonly opts: DenyListSyncOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.call?.cancel();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    while (this.running) {
      try {
        await this.watch();
        // The issuer ended the stream (e.g. it is shutting down): open it again.
      } catch (err) {
        if (!this.running) break;
        this.failures++;
        const e = err as ServiceError;
        const fields = { failures: this.failures, code: typeof e?.code === 'number' ? status[e.code] : undefined, err: String(err) };
        if (this.failures === 1) log.warn(fields, 'deny-list watch failed; polling and reconnecting');
        else log.debug(fields, 'deny-list watch failed again');
        try {
          await this.poll();
        } catch (pollErr) {
          log.debug({ err: String(pollErr) }, 'deny-list poll failed');
        }
      }
      if (!this.running) break;
      const cap = this.opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
      const min = this.opts.minBackoffMs ?? DEFAULT_MIN_BACKOFF_MS;
      // Full jitter, so terminals do not all reconnect at the same instant after an issuer restart.
      await this.sleep(min + Math.random() * Math.min(cap, min * 2 ** Math.min(this.failures, 16)));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  /** Follows one stream until it ends (resolves) or fails (rejects). Changes are applied in order, one message at a time. */
  private async watch(): Promise<void> {
    const { store, client, terminalId, log } = this.opts;
    const from = await store.denyListVersion();
    const staleAfter = this.opts.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
    await new Promise<void>((resolve, reject) => {
      const call = client.watchDenyList({ fromVersion: from.toString(), terminalId }, new Metadata());
      this.call = call;
      // stop() may have come while the version was read, before there was a call to cancel.
      if (!this.running) call.cancel();
      let settled = false;
      let applying = Promise.resolve();
      let watchdog = setTimeout(onStale, staleAfter);
      function onStale() {
        call.cancel();
        settle(new Error(`no deny-list message for ${staleAfter} ms`));
      }
      const settle = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        // Whatever was received is applied before the stream counts as over.
        applying.then(
          () => (err ? reject(err) : resolve()),
          (applyErr) => reject(applyErr),
        );
      };
      call.on('data', (message: WatchDenyListResponse) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(onStale, staleAfter);
        call.pause();
        applying = applying
          .then(async () => {
            const version = await store.applyDenyListChanges(message.changes, message.reset);
            this.syncedAt = new Date();
            this.failures = 0;
            if (message.changes.length > 0 || message.reset) {
              log.info({ version: version.toString(), changes: message.changes.length, reset: message.reset }, 'deny list updated');
            }
            call.resume();
          })
          .catch((err) => {
            // E.g. a gap in the versions: drop the stream and sync again from the version held.
            call.cancel();
            settle(err);
            throw err;
          });
        applying.catch(() => {});
      });
      call.on('error', (err: ServiceError) => settle(this.running || err.code !== status.CANCELLED ? err : undefined));
      call.on('end', () => settle());
    });
    this.call = undefined;
  }

  /** Catches up through ListDenyListChanges, page by page. */
  async poll(): Promise<void> {
    const { store, client } = this.opts;
    for (;;) {
      const from = await store.denyListVersion();
      const page = await callUnary(client, client.listDenyListChanges, { fromVersion: from.toString(), pageSize: POLL_PAGE }, POLL_DEADLINE_MS);
      const version = await store.applyDenyListChanges(page.changes, page.reset);
      this.syncedAt = new Date();
      if (page.changes.length > 0) this.opts.log.info({ version: version.toString(), changes: page.changes.length }, 'deny list updated by polling');
      if (page.changes.length < POLL_PAGE || version >= BigInt(page.headVersion)) return;
    }
  }
}
