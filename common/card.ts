// The virtual IC card and its command set, with the card cryptography that
// terminals, the issuer and the phone app share:
// - card keys diversified from the issuer master key by card id;
// - the zero-amount debit: the card advances its counter and MACs
//   (card id, counter, amount 0, terminal id, terminal sequence, terminal random);
// - the credit flag, signed by the issuer with Ed25519.
import { createHmac, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { CardImage, type CardProof, type CreditFlag } from '../gen/tapcredit/type/v1/card.js';

export const CARD_KEY_BYTES = 16;
export const MAC_BYTES = 8;
export const TERMINAL_RANDOM_BYTES = 8;
export const CREDIT_FLAG_VERSION = 1;

/** The card's own key: HMAC-SHA256(master key, card id), as a SAM would derive it. */
export function diversifyCardKey(masterKey: Buffer, cardId: string): Buffer {
  return createHmac('sha256', masterKey).update('tapcredit/card-key/v1\0').update(cardId).digest().subarray(0, CARD_KEY_BYTES);
}

function lengthPrefixed(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function uint64(value: bigint | string): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(value));
  return b;
}

export interface MacInput {
  cardId: string;
  counter: bigint | string;
  amount: bigint | string;
  terminalId: string;
  terminalSequence: bigint | string;
  terminalRandom: Buffer | Uint8Array;
}

export function computeCardMac(cardKey: Buffer | Uint8Array, input: MacInput): Buffer {
  return createHmac('sha256', cardKey)
    .update(lengthPrefixed(input.cardId))
    .update(uint64(input.counter))
    .update(uint64(input.amount))
    .update(lengthPrefixed(input.terminalId))
    .update(uint64(input.terminalSequence))
    .update(lengthPrefixed(Buffer.from(input.terminalRandom)))
    .digest()
    .subarray(0, MAC_BYTES);
}

/** What the terminal's SAM or the issuer does: recompute the MAC from the master key and compare. */
export function verifyCardProof(masterKey: Buffer, proof: CardProof): boolean {
  if (proof.mac.length !== MAC_BYTES) return false;
  const expected = computeCardMac(diversifyCardKey(masterKey, proof.cardId), { ...proof, amount: 0n });
  return timingSafeEqual(expected, Buffer.from(proof.mac));
}

// --- card commands: what the chip answers ---

/** READ of the designated storage area. */
export function readDesignatedArea(card: CardImage): CreditFlag | undefined {
  return card.creditFlag;
}

/** The zero-amount debit command: the card advances its counter and proves itself with a MAC. */
export function zeroAmountDebit(
  card: CardImage,
  reader: { terminalId: string; terminalSequence: bigint | string; terminalRandom: Buffer },
): { card: CardImage; proof: CardProof } {
  const counter = BigInt(card.counter) + 1n;
  const mac = computeCardMac(card.cardKey, {
    cardId: card.cardId,
    counter,
    amount: 0n,
    terminalId: reader.terminalId,
    terminalSequence: reader.terminalSequence,
    terminalRandom: reader.terminalRandom,
  });
  return {
    card: { ...card, counter: counter.toString() },
    proof: {
      cardId: card.cardId,
      counter: counter.toString(),
      terminalId: reader.terminalId,
      terminalSequence: BigInt(reader.terminalSequence).toString(),
      terminalRandom: reader.terminalRandom,
      mac,
    },
  };
}

/** WRITE of the designated storage area. */
export function writeCreditFlag(card: CardImage, flag: CreditFlag): CardImage {
  return { ...card, creditFlag: flag };
}

/** Personalization at the issuer: a new card with its diversified key and an empty storage area. */
export function issueCard(masterKey: Buffer, card: { cardId: string; issuerCode: string; expiresOn: string }): CardImage {
  return { ...card, counter: '0', cardKey: diversifyCardKey(masterKey, card.cardId), creditFlag: undefined };
}

export const newTerminalRandom = () => randomBytes(TERMINAL_RANDOM_BYTES);

// --- the credit flag ---

export type CreditFlagFields = Omit<CreditFlag, 'signature'>;

/** Canonical bytes the issuer signs. */
export function creditFlagPayload(flag: CreditFlagFields): Buffer {
  const version = Buffer.alloc(4);
  version.writeUInt32BE(flag.version);
  return Buffer.concat([
    Buffer.from('tapcredit/credit-flag/v1\0'),
    lengthPrefixed(flag.cardId),
    lengthPrefixed(flag.agreementId),
    version,
    uint64(BigInt(flag.issuedAt?.getTime() ?? 0)),
  ]);
}

export function signCreditFlag(signingKey: KeyObject, fields: CreditFlagFields): CreditFlag {
  return { ...fields, signature: sign(null, creditFlagPayload(fields), signingKey) };
}

export function verifyCreditFlag(issuerPublicKey: KeyObject, flag: CreditFlag): boolean {
  if (flag.signature.length !== 64) return false;
  let payload: Buffer;
  try {
    payload = creditFlagPayload(flag);
  } catch {
    // Fields no issuer could have signed (an id over 65535 bytes, a time before 1970 or out of range): a forged or corrupt flag.
    return false;
  }
  return verify(null, payload, issuerPublicKey, flag.signature);
}

// --- card image files (proto JSON) ---

export function readCardFile(path: string): CardImage {
  return CardImage.fromJSON(JSON.parse(readFileSync(path, 'utf8')));
}

/** Writes atomically, so a crash never leaves half a card behind. */
export function writeCardFile(path: string, card: CardImage): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(CardImage.toJSON(card), null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}
