// TerminalService handlers: validate, decide offline, store, map to proto.
import type { KeyObject } from 'node:crypto';
import { newTerminalRandom } from '../common/card.js';
import type { Logger } from '../common/log.js';
import { unaryHandlers, type AsyncHandlers } from '../common/server.js';
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
import { decide, utcDay } from './decision.js';
import type { TerminalStore } from './store.js';

export const ERROR_DOMAIN = 'terminal.tapcredit';
// The issuer stores counters as int64; the card adds one before answering.
const COUNTER_MAX = 2n ** 63n - 1n;
const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;
const DEFAULT_UNSENT_LIMIT = 100;
const MAX_UNSENT_LIMIT = 1000;

export interface TerminalContext {
  terminalId: string;
  issuerCode: string;
  masterKey: Buffer;
  issuerPublicKey: KeyObject;
  fare: Money;
  /** Line or route served, whose tariff set the fare; recorded on each tap. */
  lineId?: string;
  /** When the deny list was last confirmed current by the issuer. */
  denyListSyncedAt?: () => Date | undefined;
  store: TerminalStore;
  forwarder: Worker;
  log: Logger;
  /** The terminal's clock; tests may fix it. */
  now?: () => Date;
}

function validatePresentCard(req: PresentCardRequest): void {
  const v = new Violations();
  const card = req.card;
  if (!card) {
    v.add('card', 'is required');
  } else {
    v.id('card.card_id', card.cardId);
    v.id('card.issuer_code', card.issuerCode);
    if (!DATE_PATTERN.test(card.expiresOn) || Number.isNaN(Date.parse(card.expiresOn))) {
      v.add('card.expires_on', 'must be a date "YYYY-MM-DD"');
    }
    if (!card.cardKey || card.cardKey.length === 0) v.add('card.card_key', 'is required');
    let counter: bigint | undefined;
    try {
      counter = BigInt(card.counter);
    } catch {
      v.add('card.counter', 'must be an unsigned integer');
    }
    if (counter !== undefined && (counter < 0n || counter >= COUNTER_MAX)) v.add('card.counter', 'is out of range');
  }
  v.throwIfAny();
}

export async function presentCard(ctx: TerminalContext, req: PresentCardRequest): Promise<PresentCardResponse> {
  validatePresentCard(req);
  const card = req.card!;
  const denyListed = ctx.store.isDenyListed(card.cardId);
  const now = ctx.now?.() ?? new Date();

  // From here to claimSequence() nothing awaits, so no other call can take
  // the sequence this card's proof is computed with.
  const terminalSequence = ctx.store.peekSequence();
  const outcome = decide({
    card,
    terminalId: ctx.terminalId,
    issuerCode: ctx.issuerCode,
    masterKey: ctx.masterKey,
    issuerPublicKey: ctx.issuerPublicKey,
    isDenyListed: () => denyListed,
    today: utcDay(now),
    terminalSequence,
    terminalRandom: newTerminalRandom(),
  });
  if (outcome.decision === 'DECLINE') {
    ctx.log.info({ cardId: card.cardId, reason: declineReasonToJSON(outcome.reason) }, 'card declined');
    return { decision: Decision.DECISION_DECLINE, declineReason: outcome.reason, tap: undefined, card: outcome.card };
  }
  ctx.store.claimSequence(terminalSequence);

  const tap: Tap = {
    tapId: `${ctx.terminalId}:${terminalSequence}`,
    terminalId: ctx.terminalId,
    terminalSequence: terminalSequence.toString(),
    cardId: card.cardId,
    agreementId: outcome.agreementId,
    fare: ctx.fare,
    tappedAt: now,
    proof: outcome.proof,
    ...(ctx.lineId ? { lineId: ctx.lineId } : {}),
    // Stored and forwarded with the tap, so it is followed by this call's trace id end to end.
    traceparent: currentTraceparent() || undefined,
  };
  // The gate opens only once the tap is committed: an accepted tap is never lost.
  await ctx.store.recordTap(tap);
  ctx.forwarder.kick();
  ctx.log.info({ tapId: tap.tapId, cardId: card.cardId }, 'card accepted');
  return { decision: Decision.DECISION_ACCEPT, declineReason: DeclineReason.DECLINE_REASON_UNSPECIFIED, tap, card: outcome.card };
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
  const handlers: AsyncHandlers<Pick<TerminalServiceServer, 'presentCard' | 'getTerminalStatus'>> = {
    presentCard: (req) => presentCard(ctx, req),
    getTerminalStatus: (req) => getTerminalStatus(ctx, req),
  };
  return unaryHandlers<TerminalServiceServer>(ERROR_DOMAIN, ctx.log, handlers as AsyncHandlers<TerminalServiceServer>);
}
