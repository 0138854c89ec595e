// One rider's ride through a running system seen only from outside, by its
// addresses and client identities (a system of child processes, e.g. `npm
// start`): open and fund an account, enroll a card as the phone app does,
// present it at the terminal, and wait until the issuer reports the tap
// SETTLED. The card exchange lives here alone, so a change of the card
// protocol changes this one function.
import { randomUUID } from 'node:crypto';
import { issueCard, writeCreditFlag } from '../../common/card.js';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { presentCard } from '../../common/present-card.js';
import { callUnary } from '../../common/rpc.js';
import { channelCredentials, type TlsConfig } from '../../common/tls.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient, TapState, tapStateToJSON } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, TerminalServiceClient, declineReasonToJSON } from '../../gen/tapcredit/terminal/v1/terminal.js';

export interface SystemEndpoints {
  terminal: string;
  issuer: string;
  authorizer: string;
  /** The card master key, as `npm run keys` wrote it (cards are personalized with it). */
  masterKey: Buffer;
  issuerCode: string;
  currency: string;
  /** mTLS identities; plaintext when unset. */
  ops?: TlsConfig;
  phone?: TlsConfig;
  /** The issuer's id, the audience of the rider's token (default issuer-1, as `npm start` runs it). */
  issuerId?: string;
}

export interface RideResult {
  tapId: string;
  /** The tap's last state at the issuer. */
  state: string;
}

/** Rides once with a new rider named by `name`; resolves once the tap is SETTLED (or rejects after timeoutMs). */
export async function rideThrough(sys: SystemEndpoints, name: string, fareMinorUnits: bigint, timeoutMs = 60_000): Promise<RideResult> {
  const authorizer = new AuthorizerServiceClient(sys.authorizer, channelCredentials(sys.ops, { role: 'authorizer' }));
  const issuerOps = new IssuerServiceClient(sys.issuer, channelCredentials(sys.ops, { role: 'issuer' }));
  const issuerPhone = new IssuerServiceClient(sys.issuer, channelCredentials(sys.phone, { role: 'issuer' }));
  const terminal = new TerminalServiceClient(sys.terminal, channelCredentials(sys.phone, { role: 'terminal' }));
  const phoneAuthorizer = new AuthorizerServiceClient(sys.authorizer, channelCredentials(sys.phone, { role: 'authorizer' }));
  const money = (minorUnits: bigint) => ({ currencyCode: sys.currency, minorUnits: String(minorUnits) });
  try {
    const accountId = `acc-${name}`;
    const holder = { name: `Rider ${name}`, phoneNumber: '+8613800138000' };
    await callUnary(authorizer, authorizer.openAccount, { accountId, holder, currencyCode: sys.currency, creditLimit: money(0n) });
    await callUnary(authorizer, authorizer.topUp, { requestId: `top-up-${name}`, accountId, amount: money(fareMinorUnits * 10n) });
    // The rider signs in through the phone app (ops set the password) for the token enrollment needs.
    const password = `password of ${accountId}`;
    await callUnary(authorizer, authorizer.setRiderPassword, { accountId, newPassword: password, currentPassword: '' });
    const { tokens } = await callUnary(phoneAuthorizer, phoneAuthorizer.signIn, { accountId, password, audience: sys.issuerId ?? 'issuer-1' });

    // The card is played by an emulator that keeps its key: the terminal only ever sees its answers.
    const card = new CardEmulator(issueCard(sys.masterKey, { cardId: `C-${name}`, issuerCode: sys.issuerCode, expiresOn: '2099-12-31' }));
    const read = readForEnrollment(card);
    const enrolled = await callUnary(issuerPhone, issuerPhone.enrollCard, {
      requestId: randomUUID(),
      card: { issuerCode: read.read.issuerCode, expiresOn: read.read.expiresOn, proof: read.proof },
      rider: holder,
      accountId,
    }, undefined, tokens!.accessToken);
    const enrolledCard = new CardEmulator(writeCreditFlag(card.card, enrolled.creditFlag!));

    const presented = await presentCard(terminal, enrolledCard, 10_000);
    if (presented.decision !== Decision.DECISION_ACCEPT) throw new Error(`the terminal declined the card: ${declineReasonToJSON(presented.declineReason)}`);
    const tapId = presented.tap!.tapId;

    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { taps } = await callUnary(issuerOps, issuerOps.listCardTaps, { cardId: read.read.cardId, pageSize: 10, pageToken: '' });
      const state = taps.find((t) => t.tap?.tapId === tapId)?.state;
      if (state === TapState.TAP_STATE_SETTLED) return { tapId, state: tapStateToJSON(state) };
      if (Date.now() > deadline) throw new Error(`tap ${tapId} not settled within ${timeoutMs} ms (state ${state === undefined ? 'unknown' : tapStateToJSON(state)})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    for (const c of [authorizer, issuerOps, issuerPhone, terminal, phoneAuthorizer]) c.close();
  }
}
