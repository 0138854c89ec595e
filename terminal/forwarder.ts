// Drains the terminal's accepted taps to the issuer: oldest first, in
// batches, through IssuerService.TapReport, until each is acknowledged.
import { status, type ServiceError } from '@grpc/grpc-js';
import { decodeErrorDetails } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { callUnary } from '../common/rpc.js';
import { runForBatch } from '../common/trace.js';
import { Worker } from '../common/worker.js';
import { IssuerServiceClient, TapReportStatus, tapReportStatusToJSON } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';
import type { TerminalStore } from './store.js';

export const DEFAULT_FORWARD_BATCH_SIZE = 500;
export const DEFAULT_FORWARD_INTERVAL_MS = 200;
export const FORWARD_DEADLINE_MS = 10_000;

/** Results after which the issuer holds the tap for good, so it is not sent again. */
const HELD_BY_ISSUER = new Set([
  TapReportStatus.TAP_REPORT_STATUS_STORED,
  TapReportStatus.TAP_REPORT_STATUS_DUPLICATE,
  TapReportStatus.TAP_REPORT_STATUS_REJECTED,
]);

export interface ForwarderOptions {
  store: TerminalStore;
  client: IssuerServiceClient;
  terminalId: string;
  batchSize?: number;
  intervalMs?: number;
  /** Batching window (common/worker.ts); 0: send as soon as a tap is accepted. */
  windowMs?: number;
  log: Logger;
}

/** Sends one batch; resolves to true when more unsent taps may be waiting. */
export async function forwardBatch(opts: ForwarderOptions): Promise<boolean> {
  const batchSize = opts.batchSize ?? DEFAULT_FORWARD_BATCH_SIZE;
  const taps = await opts.store.unsentTaps(batchSize);
  if (taps.length === 0) return false;

  // The call joins the first tap's trace; every tap carries its own traceparent.
  let response;
  try {
    response = await runForBatch(taps[0].traceparent, () =>
      callUnary(opts.client, opts.client.tapReport, { terminalId: opts.terminalId, taps }, FORWARD_DEADLINE_MS),
    );
  } catch (err) {
    const refused = refusedTaps(err, taps);
    if (refused.length === 0) throw err;
    // The issuer refused the batch for some of its taps only: hold those for an operator and send the rest.
    opts.log.error({ tapIds: refused.map((t) => t.tapId), err: String(err) }, 'issuer refused taps as malformed; they are held for an operator');
    await opts.store.markHeld(refused.map((t) => t.tapId), 'INVALID_ARGUMENT', new Date());
    return true;
  }
  const sent = new Set(taps.map((t) => t.tapId));
  const acked: string[] = [];
  const held: string[] = [];
  for (const result of response.results) {
    if (!sent.has(result.tapId)) {
      opts.log.error({ tapId: result.tapId }, 'issuer answered for a tap that was not sent');
    } else if (HELD_BY_ISSUER.has(result.status)) {
      acked.push(result.tapId);
      if (result.status === TapReportStatus.TAP_REPORT_STATUS_REJECTED) {
        opts.log.warn({ tapId: result.tapId, reason: result.reason }, 'issuer rejected a tap');
      }
    } else {
      // TAP_ID_CONFLICT means another tap already holds this id at the issuer
      // (e.g. two terminals configured with one id). Sending it again cannot
      // help: it is held, kept unsent for an operator, and the taps behind it go on.
      held.push(result.tapId);
      opts.log.error(
        { tapId: result.tapId, status: tapReportStatusToJSON(result.status), reason: result.reason },
        'issuer did not take a tap; it is held for an operator',
      );
    }
  }
  const now = new Date();
  await opts.store.markAcked(acked, now);
  await opts.store.markHeld(held, 'TAP_ID_CONFLICT', now);
  opts.log.debug({ sent: taps.length, acked: acked.length, held: held.length }, 'taps forwarded');
  // A full batch with progress means more may be waiting; a batch without
  // any (no answer for any tap) must not turn the loop into a busy spin.
  return taps.length === batchSize && acked.length + held.length > 0;
}

/**
 * The taps an INVALID_ARGUMENT names (its field violations under taps[i]),
 * when they are some of the batch, not all: then the batch fails for those
 * taps alone, and sending it again cannot help. Empty otherwise (a refusal
 * of the whole request, or of every tap, may be a passing misconfiguration:
 * the batch is retried).
 */
export function refusedTaps(err: unknown, taps: Tap[]): Tap[] {
  if ((err as ServiceError)?.code !== status.INVALID_ARGUMENT) return [];
  const details = decodeErrorDetails(err as ServiceError);
  // Past the cap of reported violations the list is partial: which taps are bad is not known.
  if (details.errorInfo?.metadata.violation_count) return [];
  const violations = details.badRequest?.fieldViolations ?? [];
  const named = new Set<number>();
  for (const v of violations) {
    const m = /^taps\[(\d+)\]/.exec(v.field);
    if (!m) return [];
    named.add(Number(m[1]));
  }
  const refused = taps.filter((_, i) => named.has(i));
  return refused.length > 0 && refused.length < taps.length ? refused : [];
}

export function createForwarder(opts: ForwarderOptions): Worker {
  return new Worker(() => forwardBatch(opts), {
    name: 'tap-forwarder',
    intervalMs: opts.intervalMs ?? DEFAULT_FORWARD_INTERVAL_MS,
    windowMs: opts.windowMs,
    log: opts.log,
  });
}
