// TerminalService handlers: validate, decide offline, store, map to proto.
import { status } from '@grpc/grpc-js';
import type { KeyObject } from 'node:crypto';
import { newTerminalRandom } from '../common/card.js';
import { ApiError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { StorageGuard } from '../common/storage.js';
import { bidiHandler, unaryHandlers, type AsyncHandlers, type DuplexSession } from '../common/server.js';
import { currentTraceparent } from '../common/trace.js';
import { Violations } from '../common/validate.js';
import type { Worker } from '../common/worker.js';
import {
  Decision,
  DeclineReason,
  declineReasonToJSON,
  type GetTerminalStatusRequest,
  type GetTerminalStatusResponse,
  type PresentCardRequest,
  type PresentCardResponse,
  type TerminalServiceServer,
} from '../gen/tapcredit/terminal/v1/terminal.js';
import type { Money } from '../gen/tapcredit/type/v1/money.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';
import { repeatOf, TapSession, utcDay } from './decision.js';
import type { TerminalStore } from './store.js';

export const ERROR_DOMAIN = 'terminal.tapcredit';
const DEFAULT_UNSENT_LIMIT = 100;
const DEFAULT_REPEAT_WINDOW_MS = 60_000;
const MAX_UNSENT_LIMIT = 1000;

export interface TerminalContext {
  terminalId: string;
  issuerCode: string;
  masterKey: Buffer;
  issuerPublicKey: KeyObject;
  fare: Money;
  /** Line or route served, whose tariff set the fare; recorded on each tap. */
  lineId?: string;
  /** How long a card has to answer each command (default 5 s): the life of a challenge. */
  answerTimeoutMs?: number;
  /** How long after an accepted tap a presentation may repeat it, free (default 60 s; see decision.ts repeatOf). */
  repeatWindowMs?: number;
  /** When the deny list was last confirmed current by the issuer. */
  denyListSyncedAt?: () => Date | undefined;
  store: TerminalStore;
  forwarder: Worker;
  /** Whether the store can write; while it cannot, every card is declined OUT_OF_SERVICE. */
  storage?: StorageGuard;
  log: Logger;
  /** The terminal's clock; tests may fix it. */
  now?: () => Date;
}

/** One card in the reader's field: the terminal's commands out, the card's answers in, the outcome last. */
export async function presentCard(ctx: TerminalContext, io: DuplexSession<PresentCardRequest, PresentCardResponse>): Promise<void> {
  // A gate that cannot store a tap accepts no card; it says so before the card is debited (no sequence is spent).
  if (ctx.storage?.full) return outOfService(ctx, io);
  const session = new TapSession({
    terminalId: ctx.terminalId,
    issuerCode: ctx.issuerCode,
    masterKey: ctx.masterKey,
    issuerPublicKey: ctx.issuerPublicKey,
    isDenyListed: (cardId) => ctx.store.isDenyListed(cardId),
    reserveSequence: () => ctx.store.reserveSequence(),
    newRandom: newTerminalRandom,
    answerTimeoutMs: ctx.answerTimeoutMs,
  });
  let step = session.start(performance.now());
  while (step.kind === 'command') {
    for (const command of step.commands) io.send({ command, outcome: undefined });
    const received = await io.receive(step.timeoutMs);
    if (received === 'timeout') step = session.timedOut();
    else if (received === 'end') throw new ApiError(status.ABORTED, 'CARD_SESSION_ENDED', 'the card closed its side before the terminal decided; nothing was stored');
    else step = session.answer(received.message.answer, performance.now(), utcDay(ctx.now?.() ?? new Date()));
  }
  if (step.kind === 'decline') {
    if (step.cardId) io.note({ cardId: step.cardId });
    ctx.log.info({ cardId: step.cardId, reason: declineReasonToJSON(step.reason) }, 'card declined');
    io.send({ command: undefined, outcome: { decision: Decision.DECISION_DECLINE, declineReason: step.reason, tap: undefined } });
    return;
  }
  const tappedAt = ctx.now?.() ?? new Date();
  // The same card again after a tap whose ACCEPT it never saw: the same ride, free.
  const repeats = repeatOf(ctx.store.lastTapOf(step.cardId, tappedAt.getTime()), step.lastCompleted, tappedAt.getTime(), ctx.repeatWindowMs ?? DEFAULT_REPEAT_WINDOW_MS);
  const tap: Tap = {
    tapId: `${ctx.terminalId}:${step.terminalSequence}`,
    terminalId: ctx.terminalId,
    terminalSequence: step.terminalSequence.toString(),
    cardId: step.cardId,
    agreementId: step.agreementId,
    fare: ctx.fare,
    tappedAt,
    proof: step.proof,
    ...(ctx.lineId ? { lineId: ctx.lineId } : {}),
    ...(repeats ? { repeatOfTapId: repeats } : {}),
    // What the card's record showed, the empty record when it held none: the issuer's repeat rule reads it.
    cardLastCompleted: step.lastCompleted ?? { tapId: '', counter: '0' },
    // Stored and forwarded with the tap, so it is followed by this call's trace id end to end.
    traceparent: currentTraceparent() || undefined,
  };
  io.note({ cardId: tap.cardId, tapId: tap.tapId });
  // The gate opens only once the tap is committed: an accepted tap is never lost.
  try {
    await ctx.store.recordTap(tap);
  } catch (err) {
    // Not stored, so not accepted and never charged: the gate shows "out of service" (its sequence is a gap).
    if (ctx.storage?.noteFailure(err)) return outOfService(ctx, io, tap.cardId);
    throw err;
  }
  ctx.forwarder.kick();
  ctx.log.info({ tapId: tap.tapId, cardId: tap.cardId, ...(repeats ? { repeatOf: repeats } : {}) }, repeats ? 'card accepted again: a repeat, no fare' : 'card accepted');
  io.send({ command: undefined, outcome: { decision: Decision.DECISION_ACCEPT, declineReason: DeclineReason.DECLINE_REASON_UNSPECIFIED, tap } });
}

function outOfService(ctx: TerminalContext, io: DuplexSession<PresentCardRequest, PresentCardResponse>, cardId?: string): void {
  ctx.log.warn({ cardId }, 'card declined: storage full, out of service');
  io.send({ command: undefined, outcome: { decision: Decision.DECISION_DECLINE, declineReason: DeclineReason.DECLINE_REASON_OUT_OF_SERVICE, tap: undefined } });
}

export async function getTerminalStatus(ctx: TerminalContext, req: GetTerminalStatusRequest): Promise<GetTerminalStatusResponse> {
  const v = new Violations();
  if (req.unsentTapsLimit < 0) v.add('unsent_taps_limit', 'must not be negative');
  v.throwIfAny();
  const limit = req.unsentTapsLimit === 0 ? DEFAULT_UNSENT_LIMIT : Math.min(req.unsentTapsLimit, MAX_UNSENT_LIMIT);

  const counts = await ctx.store.counts();
  const unsentTaps = await ctx.store.unsentTaps(limit, { includeHeld: true });
  return {
    terminalId: ctx.terminalId,
    fare: ctx.fare,
    acceptedTapCount: String(counts.acceptedTapCount),
    unsentTapCount: String(counts.unsentTapCount),
    unsentTaps,
    heldTapCount: String(counts.heldTapCount),
    heldTapIds: await ctx.store.heldTapIds(limit),
    lastForwardedAt: counts.lastForwardedAt,
    denyListVersion: counts.denyListVersion,
    denyListSize: String(counts.denyListSize),
    lineId: ctx.lineId ?? '',
    denyListSyncedAt: ctx.denyListSyncedAt?.(),
  };
}

export function terminalHandlers(ctx: TerminalContext): TerminalServiceServer {
  // Typed against the RPCs only: AsyncHandlers<TerminalServiceServer> also maps
  // grpc-js's index signature (to never), which no object literal satisfies.
  const handlers: AsyncHandlers<Pick<TerminalServiceServer, 'getTerminalStatus'>> = {
    getTerminalStatus: (req) => getTerminalStatus(ctx, req),
  };
  return {
    ...unaryHandlers<TerminalServiceServer>(ERROR_DOMAIN, ctx.log, handlers as AsyncHandlers<TerminalServiceServer>),
    presentCard: bidiHandler<PresentCardRequest, PresentCardResponse>(ERROR_DOMAIN, ctx.log, 'presentCard', (io) => presentCard(ctx, io)),
  };
}
