// The card's side of TerminalService.PresentCard over gRPC: opens the call,
// answers each command the terminal sends with the card (a CardEmulator or
// anything that answers commands) and resolves the terminal's outcome. Used
// by the phone app, the bench and the tests.
import type { ServiceError } from '@grpc/grpc-js';
import { Decision, type TapOutcome, type TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import type { CardAnswer, CardCommand, CardImage } from '../gen/tapcredit/type/v1/card.js';
import { CardEmulator } from './card-emulator.js';
import { DEFAULT_DEADLINE_MS } from './rpc.js';
import { outgoingMetadata } from './trace.js';

/** Anything that answers card commands: a CardEmulator, or a test's slow or misbehaving card. */
export interface CardSide {
  answer(command: CardCommand | undefined): CardAnswer | Promise<CardAnswer>;
}

/**
 * Presents the card at the terminal and resolves the outcome as it arrives;
 * rejects with the ServiceError when the call fails before it (or with an
 * Error when the terminal ends without an outcome). On ACCEPT the reader
 * opens the gate and writes COMPLETE to the card first, so the card's record
 * shows exactly the taps whose ACCEPT a reader saw (docs/card-protocol.md,
 * "COMPLETE").
 */
export function presentCard(client: TerminalServiceClient, card: CardSide, deadlineMs = DEFAULT_DEADLINE_MS): Promise<TapOutcome> {
  return new Promise((resolve, reject) => {
    const call = client.presentCard(outgoingMetadata(), { deadline: Date.now() + deadlineMs });
    let outcome: TapOutcome | undefined;
    // The card answers its commands one after the other, in the order they came.
    let answering = Promise.resolve();
    let failed = false;
    call.on('data', (message: { command?: CardCommand; outcome?: TapOutcome }) => {
      if (message.outcome) {
        const accepted = (outcome = message.outcome);
        call.end();
        const tap = accepted.decision === Decision.DECISION_ACCEPT ? accepted.tap : undefined;
        if (!tap?.proof) {
          resolve(accepted);
          return;
        }
        // After the answers to the terminal's commands (all in: the terminal accepts only then).
        answering = answering
          // The gate opens whatever the card says; a card that refuses the record just keeps an older one.
          .then(() => card.answer({ read: undefined, debit: undefined, complete: { tapId: tap.tapId, counter: tap.proof!.counter } }))
          .then(
            () => resolve(accepted),
            () => resolve(accepted),
          );
      } else if (message.command) {
        const command = message.command;
        answering = answering
          .then(async () => {
            if (failed) return;
            const answer: CardAnswer = await card.answer(command);
            if (!outcome) call.write({ answer }); // an answer after the outcome goes nowhere
          })
          .catch((err) => {
            failed = true;
            call.cancel();
            reject(err);
          });
      }
    });
    // Once the outcome is in, the gate has opened or not: what becomes of the call afterwards changes nothing.
    call.on('error', (err: ServiceError) => {
      if (!outcome) reject(err);
    });
    call.on('status', (s: { code: number }) => {
      if (s.code === 0 && !outcome) reject(new Error('the terminal ended the call without an outcome'));
    });
  });
}

/** The outcome with the card as it left the reader's field (its counter advanced by the debit, if any). */
export type TapResult = TapOutcome & { card: CardImage };

/**
 * Presents a card image held in memory (the bench's riders, the tests):
 * answers the terminal with a CardEmulator over it. The card's image after
 * the commands comes back with the outcome, and also when the call fails
 * (as err.card), for a card's counter moves on whenever it answered a debit.
 */
export async function presentCardImage(client: TerminalServiceClient, card: CardImage, deadlineMs = DEFAULT_DEADLINE_MS): Promise<TapResult> {
  const emulator = new CardEmulator(card);
  try {
    return { ...(await presentCard(client, emulator, deadlineMs)), card: emulator.card };
  } catch (err) {
    if (err && typeof err === 'object') (err as { card?: CardImage }).card = emulator.card;
    throw err;
  }
}
