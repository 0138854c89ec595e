// What a rider does in the tests: open an account at the authorizer (as ops),
// enroll a card through the issuer as the phone app does, and tap at a
// terminal (with the phone app's identity when the system runs with mTLS).
import { randomUUID } from 'node:crypto';
import { newTerminalRandom, writeCreditFlag, zeroAmountDebit } from '../../common/card.js';
import { callUnary } from '../../common/rpc.js';
import type { EnrollCardResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { PresentCardResponse } from '../../gen/tapcredit/terminal/v1/terminal.js';
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
  const read = zeroAmountDebit(card, { terminalId: 'phone', terminalSequence: 0n, terminalRandom: newTerminalRandom() });
  const client = sys.phone.issuerClient;
  const response = await callUnary(client, client.enrollCard, {
    requestId,
    card: { issuerCode: card.issuerCode || ISSUER_CODE, expiresOn: card.expiresOn, proof: read.proof },
    rider: { name: r.name, phoneNumber: r.phoneNumber },
    accountId: r.accountId,
  });
  return { card: writeCreditFlag(read.card, response.creditFlag!), response };
}

/** Presents the card at terminal i and returns the decision with the card as the terminal left it. */
export async function tap(sys: System, card: CardImage, terminal = 0): Promise<PresentCardResponse> {
  const client = sys.phone.terminalClients[terminal];
  return callUnary(client, client.presentCard, { card });
}
