// What a rider does in the tests: open an account at the authorizer (as ops),
// enroll a card through the issuer as the phone app does, and tap at a
// terminal (with the phone app's identity when the system runs with mTLS).
import { randomUUID } from 'node:crypto';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { presentCardImage, type TapResult } from '../../common/present-card.js';
import { callUnary } from '../../common/rpc.js';
import type { EnrollCardResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { CURRENCY, ISSUER_CODE, ISSUER_ID, money, type System } from './system.js';

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

const tokens = new WeakMap<System, Map<string, Promise<string>>>();

/** The rider's sign-in password in the tests. */
export const passwordOf = (r: RiderDetails) => `password of ${r.accountId}`;

/**
 * The rider's access token for the system's issuer (signed in once per
 * system): ops sets the password, the phone app signs in. Undefined for a
 * plaintext system, which authorizes nothing.
 */
export function riderToken(sys: System, r: RiderDetails): Promise<string | undefined> {
  if (!sys.tls) return Promise.resolve(undefined);
  let bySys = tokens.get(sys);
  if (!bySys) tokens.set(sys, (bySys = new Map()));
  let token = bySys.get(r.accountId);
  if (!token) {
    token = (async () => {
      await callUnary(sys.authorizerClient, sys.authorizerClient.setRiderPassword, { accountId: r.accountId, newPassword: passwordOf(r), currentPassword: '' });
      const c = sys.phone.authorizerClient;
      const { tokens: t } = await callUnary(c, c.signIn, { accountId: r.accountId, password: passwordOf(r), audience: ISSUER_ID });
      return t!.accessToken;
    })();
    bySys.set(r.accountId, token);
  }
  return token;
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
  }, undefined, await riderToken(sys, r));
  emulator.writeCreditFlag(response.creditFlag!);
  return { card: emulator.card, response };
}

/** Presents the card at terminal i (the test plays the card) and returns the outcome with the card as it left the reader. */
export async function tap(sys: System, card: CardImage, terminal = 0): Promise<TapResult> {
  return presentCardImage(sys.phone.terminalClients[terminal], card);
}
