// The card side of the card protocol (docs/card-protocol.md): what the chip
// answers to each reader command. One module for every card this project
// plays: the phone app's card file, the bench's riders and the tests. The
// card key stays in here; readers only ever see CardAnswer messages.
//
// Also the reader side the phone app uses on its own card at enrollment
// (readForEnrollment): READ, then a zero-amount debit for reader "phone".
import { computeCardMac, MAC_BYTES, newTerminalRandom, readCardFile, TERMINAL_RANDOM_BYTES, writeCardFile, writeCreditFlag } from './card.js';
import {
  CardStatus,
  type CardAnswer,
  type CardCommand,
  type CardImage,
  type CardProof,
  type CompleteCommand,
  type CreditFlag,
  type DebitCommand,
  type ReadCardAnswer,
} from '../gen/tapcredit/type/v1/card.js';

/** The reader id of the phone app, in the debits it sends its own card. */
export const PHONE_READER_ID = 'phone';
/** The terminal sequence the phone app sends: it keeps no sequence of its own. */
export const PHONE_TERMINAL_SEQUENCE = 0n;
// The card's counter is an int64 at the issuer: a card that would pass it refuses to debit.
const COUNTER_MAX = 2n ** 63n - 1n;

const refused = (status: CardStatus): CardAnswer => ({ status, read: undefined, debit: undefined, complete: undefined });

/** A card answering reader commands from its image; after each debit the image has its counter advanced. */
export class CardEmulator {
  constructor(
    private image: CardImage,
    /** Called with the new image after every command that changed it (a card file writes it back here). */
    private readonly onChange?: (card: CardImage) => void,
  ) {}

  /** A card kept in a card image file: the file is rewritten (atomically) after every debit. */
  static fromFile(path: string): CardEmulator {
    return new CardEmulator(readCardFile(path), (card) => writeCardFile(path, card));
  }

  /** The card's image as it stands (with its key: for the card's owner only). */
  get card(): CardImage {
    return this.image;
  }

  /** Answers one command, as the chip does. */
  answer(command: CardCommand | undefined): CardAnswer {
    if (command?.read) return { status: CardStatus.CARD_STATUS_OK, read: this.read(), debit: undefined, complete: undefined };
    if (command?.debit) return this.debit(command.debit);
    if (command?.complete) return this.complete(command.complete);
    return refused(CardStatus.CARD_STATUS_COMMAND_NOT_SUPPORTED);
  }

  /** WRITE of the designated storage area (the phone app, after enrollment). */
  writeCreditFlag(flag: CreditFlag): void {
    this.change(writeCreditFlag(this.image, flag));
  }

  private read(): ReadCardAnswer {
    const c = this.image;
    return { cardId: c.cardId, issuerCode: c.issuerCode, expiresOn: c.expiresOn, counter: c.counter, creditFlag: c.creditFlag, lastCompleted: c.lastCompleted };
  }

  /**
   * COMPLETE: the reader saw this tap accepted. The card keeps the record of
   * the highest counter only (a late COMPLETE of an older tap changes
   * nothing), and refuses a counter it has not reached or an empty tap id.
   */
  private complete(cmd: CompleteCommand): CardAnswer {
    let counter: bigint;
    try {
      counter = BigInt(cmd.counter);
    } catch {
      return refused(CardStatus.CARD_STATUS_REJECTED);
    }
    if (cmd.tapId === '' || counter < 1n || counter > BigInt(this.image.counter)) return refused(CardStatus.CARD_STATUS_REJECTED);
    const held = this.image.lastCompleted;
    if (!held || BigInt(held.counter) < counter) this.change({ ...this.image, lastCompleted: { tapId: cmd.tapId, counter: counter.toString() } });
    return { status: CardStatus.CARD_STATUS_OK, read: undefined, debit: undefined, complete: { lastCompleted: this.image.lastCompleted } };
  }

  private debit(cmd: DebitCommand): CardAnswer {
    const counter = BigInt(this.image.counter) + 1n;
    if (cmd.terminalId === '' || cmd.terminalRandom.length !== TERMINAL_RANDOM_BYTES || counter > COUNTER_MAX) {
      return refused(CardStatus.CARD_STATUS_REJECTED);
    }
    const mac = computeCardMac(this.image.cardKey, {
      cardId: this.image.cardId,
      counter,
      amount: cmd.amount,
      terminalId: cmd.terminalId,
      terminalSequence: cmd.terminalSequence,
      terminalRandom: cmd.terminalRandom,
    });
    // The counter is advanced (and a card file written) before the answer leaves the card, as a chip commits before it answers.
    this.change({ ...this.image, counter: counter.toString() });
    return { status: CardStatus.CARD_STATUS_OK, read: undefined, debit: { counter: counter.toString(), mac }, complete: undefined };
  }

  private change(card: CardImage): void {
    this.image = card;
    this.onChange?.(card);
  }
}

/** What the phone app learns by reading its own card: the card's data and the proof the issuer checks at enrollment. */
export interface EnrollmentRead {
  read: ReadCardAnswer;
  proof: CardProof;
}

/**
 * The phone app as a reader of its own card: READ, then a zero-amount debit
 * for reader "phone", sequence 0 and a fresh random. Throws when the card
 * does not answer as the protocol says.
 */
export function readForEnrollment(card: Pick<CardEmulator, 'answer'>, terminalRandom: Buffer = newTerminalRandom()): EnrollmentRead {
  const readAnswer = card.answer({ read: {}, debit: undefined, complete: undefined });
  if (readAnswer.status !== CardStatus.CARD_STATUS_OK || !readAnswer.read) throw new Error(`the card refused READ (status ${readAnswer.status})`);
  const debit = { amount: '0', terminalId: PHONE_READER_ID, terminalSequence: PHONE_TERMINAL_SEQUENCE.toString(), terminalRandom };
  const debitAnswer = card.answer({ read: undefined, debit, complete: undefined });
  if (debitAnswer.status !== CardStatus.CARD_STATUS_OK || !debitAnswer.debit || debitAnswer.debit.mac.length !== MAC_BYTES) {
    throw new Error(`the card refused the zero-amount debit (status ${debitAnswer.status})`);
  }
  const read = readAnswer.read;
  return {
    read,
    proof: {
      cardId: read.cardId,
      counter: debitAnswer.debit.counter,
      terminalId: PHONE_READER_ID,
      terminalSequence: debit.terminalSequence,
      terminalRandom,
      mac: Buffer.from(debitAnswer.debit.mac),
    },
  };
}
