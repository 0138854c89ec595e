// The offline decision a terminal takes when a card is in its reader's
// field, as the reader side of the card protocol (docs/card-protocol.md):
// no network, only the card's answers, the SAM (issuer master key), the
// issuer's public key and the deny list the terminal holds. The card key
// never reaches the terminal: the card proves it holds it by MACing a
// zero-amount debit over the terminal's fresh challenge.
//
// TapSession is a plain state machine; terminal/handlers.ts carries its
// commands and the card's answers over the PresentCard stream.
import type { KeyObject } from 'node:crypto';
import { MAC_BYTES, TERMINAL_RANDOM_BYTES, verifyCardProof, verifyCreditFlag } from '../common/card.js';
import { Violations } from '../common/validate.js';
import { CardStatus, type CardAnswer, type CardCommand, type CardProof, type CompletedTap, type DebitCommand, type ReadCardAnswer } from '../gen/tapcredit/type/v1/card.js';
import { DeclineReason } from '../gen/tapcredit/terminal/v1/terminal.js';

/** How long a card has to answer a command, by default: the life of a challenge. */
export const DEFAULT_ANSWER_TIMEOUT_MS = 5_000;
// The issuer stores counters as int64; the card adds one before answering the debit.
const COUNTER_MAX = 2n ** 63n - 1n;
const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;

export interface ReaderContext {
  terminalId: string;
  /** Code of the issuer whose cards this terminal takes. */
  issuerCode: string;
  /** The issuer master key held by the terminal's SAM. */
  masterKey: Buffer;
  /** Verifies the issuer's signature on credit flags. */
  issuerPublicKey: KeyObject;
  /** True when the card is on the deny list the terminal holds. */
  isDenyListed: (cardId: string) => boolean;
  /** Takes the terminal sequence for a debit (and the tap, if accepted); never hands one out twice. */
  reserveSequence: () => bigint;
  /** Fresh random bytes for a challenge. */
  newRandom: () => Buffer;
  /** How long the card has to answer each command (default DEFAULT_ANSWER_TIMEOUT_MS). */
  answerTimeoutMs?: number;
}

/** What the terminal does next: send these commands (maybe none) and wait for the card's next answer, or end. */
export type Step =
  | { kind: 'command'; commands: CardCommand[]; timeoutMs: number }
  | { kind: 'decline'; reason: DeclineReason; cardId?: string }
  | { kind: 'accept'; cardId: string; agreementId: string; proof: CardProof; terminalSequence: bigint; lastCompleted?: CompletedTap };

/** What a terminal remembers of a card's last accepted tap at it (terminal/store.ts). */
export interface LastTap {
  tapId: string;
  /** The tap's proof counter. */
  counter: bigint;
  /** Epoch ms. */
  tappedAt: number;
  /** Set when that tap was itself a repeat. */
  repeatOf?: string;
}

/**
 * The tap a presentation repeats, or undefined for a new, charged ride. A
 * card presented again at this terminal within the window after its last
 * accepted tap here, whose record of its last completed tap stops below that
 * tap's counter, never saw that tap's ACCEPT: the terminal stored it and the
 * gate stayed shut (the terminal died before answering, or the answer was
 * lost). The gate opens for it without a new charge, once: a tap that is
 * itself a repeat is never repeated. A card whose record shows the tap (or a
 * later one) completed is taking another ride.
 */
export function repeatOf(last: LastTap | undefined, record: CompletedTap | undefined, nowMs: number, windowMs: number): string | undefined {
  if (!last || last.repeatOf !== undefined) return undefined;
  if (nowMs - last.tappedAt > windowMs) return undefined;
  const completed = record ? BigInt(record.counter) : 0n;
  return completed < last.counter ? last.tapId : undefined;
}

/** Today's service day in UTC, as cards store their expiry. */
export const utcDay = (now: Date) => now.toISOString().slice(0, 10);

/** The checks a gate runs on what the card READ answered, cheapest first; undefined when the card may be debited. */
export function checkCard(
  read: ReadCardAnswer,
  input: Pick<ReaderContext, 'issuerCode' | 'issuerPublicKey' | 'isDenyListed'> & { today: string },
): DeclineReason | undefined {
  if (read.issuerCode !== input.issuerCode) return DeclineReason.DECLINE_REASON_WRONG_ISSUER;
  const flag = read.creditFlag;
  if (!flag) return DeclineReason.DECLINE_REASON_NO_CREDIT_FLAG;
  if (!verifyCreditFlag(input.issuerPublicKey, flag)) return DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID;
  if (flag.cardId !== read.cardId) return DeclineReason.DECLINE_REASON_FLAG_CARD_MISMATCH;
  // The card is valid through its expiry day; "YYYY-MM-DD" strings order like dates.
  if (read.expiresOn < input.today) return DeclineReason.DECLINE_REASON_CARD_EXPIRED;
  if (input.isDenyListed(read.cardId)) return DeclineReason.DECLINE_REASON_DENY_LISTED;
  return undefined;
}

/** Refuses (INVALID_ARGUMENT) an answer that is not an answer to the command sent. */
function validateAnswer(answer: CardAnswer | undefined, expected: 'read' | 'debit'): CardAnswer {
  const v = new Violations();
  if (!answer) v.add('answer', 'is required');
  else if (answer.status === CardStatus.CARD_STATUS_UNSPECIFIED) v.add('answer.status', 'is required (must not be UNSPECIFIED)');
  else if (answer.status === CardStatus.CARD_STATUS_OK && !answer[expected]) v.add(`answer.${expected}`, `is required: the answer to the ${expected.toUpperCase()} command`);
  v.throwIfAny();
  return answer!;
}

/**
 * One card in the reader's field: READ and the zero-amount DEBIT sent
 * together (the card answers them in order, so a tap takes one round trip
 * to the card, not two), then the checks on the READ answer, then the MAC
 * check on the DEBIT answer. The sequence and random of the debit are the
 * challenge; a card declined on its READ answer is not waited for.
 */
export class TapSession {
  private state: 'new' | 'read' | 'debit' | 'done' = 'new';
  private read?: ReadCardAnswer & { counterValue: bigint };
  private challenge?: DebitCommand & { sequence: bigint; sentAt: number };
  private readonly timeoutMs: number;

  constructor(private readonly ctx: ReaderContext) {
    this.timeoutMs = ctx.answerTimeoutMs ?? DEFAULT_ANSWER_TIMEOUT_MS;
  }

  /** The first commands, sent at `now` (ms; the clock of answer()): READ, then the zero-amount DEBIT with a fresh challenge. */
  start(now: number): Step {
    if (this.state !== 'new') throw new Error('the session has started');
    const sequence = this.ctx.reserveSequence();
    const random = this.ctx.newRandom();
    if (random.length !== TERMINAL_RANDOM_BYTES) throw new Error(`a challenge takes ${TERMINAL_RANDOM_BYTES} random bytes`);
    const debit: DebitCommand = { amount: '0', terminalId: this.ctx.terminalId, terminalSequence: sequence.toString(), terminalRandom: random };
    this.challenge = { ...debit, sequence, sentAt: now };
    this.state = 'read';
    return {
      kind: 'command',
      commands: [
        { read: {}, debit: undefined },
        { read: undefined, debit },
      ],
      timeoutMs: this.timeoutMs,
    };
  }

  /** The card did not answer in time (or answered too late): the challenge is stale. */
  timedOut(): Step {
    this.state = 'done';
    return { kind: 'decline', reason: DeclineReason.DECLINE_REASON_ANSWER_TIMEOUT, cardId: this.read?.cardId };
  }

  /**
   * The card's answer to the last command, received at `now` (ms, the
   * reader's monotonic or wall clock; the same one for every call).
   * Throws INVALID_ARGUMENT for an answer that is malformed or answers
   * another command. `today` is the service day for the expiry check.
   */
  answer(answer: CardAnswer | undefined, now: number, today: string): Step {
    if (this.state === 'read') return this.onRead(validateAnswer(answer, 'read'), now, today);
    if (this.state === 'debit') return this.onDebit(validateAnswer(answer, 'debit'), now);
    throw new Error(`no command is waiting for an answer (state ${this.state})`);
  }

  private onRead(answer: CardAnswer, now: number, today: string): Step {
    if (now - this.challenge!.sentAt > this.timeoutMs) return this.timedOut();
    // A card that cannot be read is not a card this terminal can authenticate.
    if (answer.status !== CardStatus.CARD_STATUS_OK) return this.decline(DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
    const read = answer.read!;
    const v = new Violations();
    v.id('answer.read.card_id', read.cardId);
    v.id('answer.read.issuer_code', read.issuerCode);
    if (!DATE_PATTERN.test(read.expiresOn) || Number.isNaN(Date.parse(read.expiresOn))) v.add('answer.read.expires_on', 'must be a date "YYYY-MM-DD"');
    const counter = v.uint63('answer.read.counter', read.counter);
    // The card adds one before it answers the debit: that one must still fit.
    if (counter === COUNTER_MAX) v.add('answer.read.counter', 'is out of range');
    if (read.lastCompleted) {
      v.id('answer.read.last_completed.tap_id', read.lastCompleted.tapId);
      const completed = v.uint63('answer.read.last_completed.counter', read.lastCompleted.counter);
      // A card completes only debits it made.
      if (completed !== undefined && counter !== undefined && completed > counter) v.add('answer.read.last_completed.counter', 'must not exceed the card counter');
    }
    v.throwIfAny();
    this.read = { ...read, counterValue: counter! };

    const reason = checkCard(read, { ...this.ctx, today });
    if (reason !== undefined) return this.decline(reason);
    // The DEBIT went out with the READ: wait for its answer, within what is left of the time limit.
    this.state = 'debit';
    return { kind: 'command', commands: [], timeoutMs: Math.max(0, this.challenge!.sentAt + this.timeoutMs - now) };
  }

  private onDebit(answer: CardAnswer, now: number): Step {
    const read = this.read!;
    const challenge = this.challenge!;
    // Checked on arrival, not only by the caller's timer: a timer may fire late on a busy machine, a stale answer is never taken.
    if (now - challenge.sentAt > this.timeoutMs) return this.timedOut();
    if (answer.status !== CardStatus.CARD_STATUS_OK) return this.decline(DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
    const debit = answer.debit!;
    const v = new Violations();
    const counter = v.uint63('answer.debit.counter', debit.counter);
    if (debit.mac.length !== MAC_BYTES) v.add('answer.debit.mac', `must be ${MAC_BYTES} bytes`);
    v.throwIfAny();

    const proof: CardProof = {
      cardId: read.cardId,
      counter: counter!.toString(),
      terminalId: challenge.terminalId,
      terminalSequence: challenge.terminalSequence,
      terminalRandom: challenge.terminalRandom,
      mac: Buffer.from(debit.mac),
    };
    // A genuine card advances its counter on the debit; the MAC (over this
    // terminal's id, sequence and fresh random) shows it holds its key now:
    // an old answer, or one computed for another reader's challenge, fails.
    if (counter! <= read.counterValue || !verifyCardProof(this.ctx.masterKey, proof)) {
      return this.decline(DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
    }
    this.state = 'done';
    return {
      kind: 'accept',
      cardId: read.cardId,
      agreementId: read.creditFlag!.agreementId,
      proof,
      terminalSequence: challenge.sequence,
      ...(read.lastCompleted ? { lastCompleted: read.lastCompleted } : {}),
    };
  }

  private decline(reason: DeclineReason): Step {
    this.state = 'done';
    return { kind: 'decline', reason, cardId: this.read?.cardId };
  }
}
