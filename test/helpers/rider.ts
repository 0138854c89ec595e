// What a rider does in the tests: open an account at the authorizer (as ops),
// enroll a card through the issuer as the phone app does, and tap at a
// terminal (with the phone app's identity when the system runs with mTLS).
import { randomUUID } from 'node:crypto';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { presentCardImage, type TapResult } from '../../common/present-card.js';
import { callUnary } from '../../common/rpc.js';
import type { EnrollCardResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { CURRENCY, ISSUER_CODE, money, type System } from './system.js';

export interface RiderDetails {
  accountId: string;
  name: string;
  phoneNumber: string;
}

export const rider = (n: number | string): RiderDetails => ({
  accountId: `acc-${n}`,
  name: `Rider ${n}`,
  phoneNumber: `+86138000${String(n).padStart(5, '0').slice(-5)}`,
});

export async function openAccount(sys: System, r: RiderDetails, topUp = 10_000n, creditLimit = 0n) {
  await callUnary(sys.authorizerClient, sys.authorizerClient.openAccount, {
    accountId: r.accountId,
    holder: { name: r.name, phoneNumber: r.phoneNumber },
    currencyCode: CURRENCY,
    creditLimit: money(creditLimit),
  });
  if (topUp > 0n) {
    await callUnary(sys.authorizerClient, sys.authorizerClient.topUp, {
      requestId: `topup-${r.accountId}-${randomUUID()}`,
      accountId: r.accountId,
      amount: money(topUp),
    });
  }
}

/** The phone app's enrollment: read the card (a zero-amount debit for reader "phone"), call EnrollCard, write the flag. */
export async function enroll(
  sys: System,
  card: CardImage,
  r: RiderDetails,
  requestId: string = randomUUID(),
): Promise<{ card: CardImage; response: EnrollCardResponse }> {
  const emulator = new CardEmulator(card);
  const read = readForEnrollment(emulator);
  const client = sys.phone.issuerClient;
  const response = await callUnary(client, client.enrollCard, {
    requestId,
    card: { issuerCode: card.issuerCode || ISSUER_CODE, expiresOn: card.expiresOn, proof: read.proof },
    rider: { name: r.name, phoneNumber: r.phoneNumber },
    accountId: r.accountId,
  });
  emulator.writeCreditFlag(response.creditFlag!);
  return { card: emulator.card, response };
}

/** Presents the card at terminal i (the test plays the card) and returns the outcome with the card as it left the reader. */
export async function tap(sys: System, card: CardImage, terminal = 0): Promise<TapResult> {
  return presentCardImage(sys.phone.terminalClients[terminal], card);
}
