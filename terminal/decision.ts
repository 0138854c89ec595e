// The offline decision a terminal takes when a card is presented: no
// network, only the card, the SAM (issuer master key), the issuer's public
// key and the deny list the terminal holds.
import type { KeyObject } from 'node:crypto';
import { readDesignatedArea, verifyCardProof, verifyCreditFlag, zeroAmountDebit } from '../common/card.js';
import type { CardImage, CardProof } from '../gen/tapcredit/type/v1/card.js';
import { DeclineReason } from '../gen/tapcredit/terminal/v1/terminal.js';

export interface DecisionInput {
  /** The card as read from the reader's field. */
  card: CardImage;
  terminalId: string;
  /** Code of the issuer whose cards this terminal takes. */
  issuerCode: string;
  /** The issuer master key held by the terminal's SAM. */
  masterKey: Buffer;
  /** Verifies the issuer's signature on credit flags. */
  issuerPublicKey: KeyObject;
  /** True when the card is on the deny list the terminal holds. */
  isDenyListed: (cardId: string) => boolean;
  /** Today's service day, "YYYY-MM-DD" (UTC). */
  today: string;
  /** The terminal sequence this tap will carry if accepted. */
  terminalSequence: bigint;
  /** Fresh random bytes for the zero-amount debit, so old proofs cannot be replayed. */
  terminalRandom: Buffer;
}

export type DecisionOutcome =
  | { decision: 'ACCEPT'; card: CardImage; proof: CardProof; agreementId: string }
  | { decision: 'DECLINE'; reason: DeclineReason; card: CardImage };

/** Today's service day in UTC, as cards store their expiry. */
export const utcDay = (now: Date) => now.toISOString().slice(0, 10);

/**
 * Runs the checks in the order a gate does: cheap reads of the card first,
 * the card command (the zero-amount debit) last. The card returned is the
 * card as the terminal left it: its counter advanced whenever the
 * zero-amount debit ran, even when its MAC then failed.
 */
export function decide(input: DecisionInput): DecisionOutcome {
  const { card } = input;
  const decline = (reason: DeclineReason, after: CardImage = card): DecisionOutcome => ({ decision: 'DECLINE', reason, card: after });

  if (card.issuerCode !== input.issuerCode) return decline(DeclineReason.DECLINE_REASON_WRONG_ISSUER);
  const flag = readDesignatedArea(card);
  if (!flag) return decline(DeclineReason.DECLINE_REASON_NO_CREDIT_FLAG);
  if (!verifyCreditFlag(input.issuerPublicKey, flag)) return decline(DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
  if (flag.cardId !== card.cardId) return decline(DeclineReason.DECLINE_REASON_FLAG_CARD_MISMATCH);
  // The card is valid through its expiry day; "YYYY-MM-DD" strings order like dates.
  if (card.expiresOn < input.today) return decline(DeclineReason.DECLINE_REASON_CARD_EXPIRED);
  if (input.isDenyListed(card.cardId)) return decline(DeclineReason.DECLINE_REASON_DENY_LISTED);

  const { card: after, proof } = zeroAmountDebit(card, {
    terminalId: input.terminalId,
    terminalSequence: input.terminalSequence,
    terminalRandom: input.terminalRandom,
  });
  if (!verifyCardProof(input.masterKey, proof)) return decline(DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED, after);
  return { decision: 'ACCEPT', card: after, proof, agreementId: flag.agreementId };
}
