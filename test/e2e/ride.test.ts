// The method end to end over three real gRPC servers: enroll a card, ride,
// see every tap debited and settled.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { signCreditFlag, verifyCreditFlag } from '../../common/card.js';
import { callUnary } from '../../common/rpc.js';
import { CardState, DenyListReason, TapState, type IssuerTap } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, DeclineReason } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { enroll, openAccount, rider, riderToken, tap } from '../helpers/rider.js';
import { FARE, expectGrpcError, newCard, startSystem, tableCounts, waitFor, type System } from '../helpers/system.js';
import { backends } from '../helpers/databases.js';

async function cardTaps(sys: System, cardId: string): Promise<IssuerTap[]> {
  const res = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId, pageSize: 500, pageToken: '' });
  return res.taps;
}

async function balance(sys: System, accountId: string): Promise<bigint> {
  const res = await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId });
  return BigInt(res.account!.balance!.minorUnits);
}

// Every backend in plaintext, and SQLite again over mTLS with every server's access policy enforced.
const modes = [...backends().map((backend) => ({ backend, tls: false })), { backend: 'sqlite' as const, tls: true }];
for (const { backend, tls } of modes)
  describe(`enroll and ride, end to end (${backend}${tls ? ', mTLS' : ''})`, function () {
  let sys: System;
  beforeEach(async () => {
    sys = await startSystem({ backend, tls });
  });
  afterEach(async () => {
    await sys.close();
  });

  describe('EnrollCard', () => {
    it('writes a credit flag signed by the issuer and binds card, rider and agreement', async () => {
      const r = rider(1);
      await openAccount(sys, r);
      const { card, response } = await enroll(sys, newCard(sys, 'C1'), r);

      expect(card.creditFlag?.cardId).to.equal('C1');
      expect(verifyCreditFlag(sys.issuerPublicKey, card.creditFlag!)).to.equal(true);
      expect(response.enrollment?.accountId).to.equal(r.accountId);

      const { card: held } = await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'C1' });
      expect(held?.state).to.equal(CardState.CARD_STATE_ENROLLED);
      expect(held?.enrollment?.agreementId).to.equal(card.creditFlag!.agreementId);
      expect(held?.enrollment?.accountId).to.equal(r.accountId);
    });

    it('returns the first result when the same enrollment request is repeated', async () => {
      const r = rider(2);
      await openAccount(sys, r);
      const card = newCard(sys, 'C2');
      const first = await enroll(sys, card, r, 'enroll-req-1');
      const issuerRows = await tableCounts(sys.issuer.db);
      const authorizerRows = await tableCounts(sys.authorizer.db);
      const again = await enroll(sys, card, r, 'enroll-req-1');
      expect(again.response).to.deep.equal(first.response);
      expect(await tableCounts(sys.issuer.db)).to.deep.equal(issuerRows);
      expect(await tableCounts(sys.authorizer.db)).to.deep.equal(authorizerRows);
    });

    it('refuses a rider who does not hold the account, and stores nothing', async () => {
      const holder = rider(3);
      await openAccount(sys, holder);
      const stranger = { ...rider(4), accountId: holder.accountId };
      await riderToken(sys, stranger); // signed in (over mTLS) before the counts
      const issuerRows = await tableCounts(sys.issuer.db);
      const authorizerRows = await tableCounts(sys.authorizer.db);
      await expectGrpcError(enroll(sys, newCard(sys, 'C3'), stranger), status.FAILED_PRECONDITION, 'RIDER_MISMATCH');
      expect(await tableCounts(sys.issuer.db)).to.deep.equal(issuerRows);
      expect(await tableCounts(sys.authorizer.db)).to.deep.equal(authorizerRows);
      await expectGrpcError(callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'C3' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
    });
  });

  describe('a ride', () => {
    it('accepts 3 taps offline, debits each fare and settles it with the issuer', async () => {
      const r = rider(10);
      await openAccount(sys, r, 10_000n);
      let { card } = await enroll(sys, newCard(sys, 'C10'), r);

      const tapIds: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await tap(sys, card);
        expect(res.decision).to.equal(Decision.DECISION_ACCEPT);
        expect(res.tap?.fare?.minorUnits).to.equal(String(FARE));
        tapIds.push(res.tap!.tapId);
        card = res.card!;
      }

      const taps = await waitFor(async () => {
        const t = await cardTaps(sys, 'C10');
        return t.length === 3 && t.every((x) => x.state === TapState.TAP_STATE_SETTLED) && t;
      });
      expect(taps.map((t) => t.tap!.tapId).sort()).to.deep.equal([...tapIds].sort());
      for (const t of taps) {
        expect(t.deductionId).to.not.equal('');
        expect(t.settlementId).to.not.equal('');
        expect(t.history.map((h) => h.state)).to.deep.equal([
          TapState.TAP_STATE_RECEIVED,
          TapState.TAP_STATE_DEDUCTING,
          TapState.TAP_STATE_DEDUCTED,
          TapState.TAP_STATE_SETTLED,
        ]);
      }

      expect(await balance(sys, r.accountId)).to.equal(10_000n - 3n * FARE);
      const settled = taps.reduce((sum, t) => sum + BigInt(t.charged!.minorUnits), 0n);
      expect(settled).to.equal(3n * FARE);
      await sys.authorizer.checkLedger();
    });

    it('accepts at the gate but records a declined debit when funds fall short', async () => {
      const r = rider(11);
      await openAccount(sys, r, FARE); // enough for one ride
      let { card } = await enroll(sys, newCard(sys, 'C11'), r);
      const first = await tap(sys, card);
      card = first.card!;
      await waitFor(async () => (await cardTaps(sys, 'C11'))[0]?.state === TapState.TAP_STATE_SETTLED);

      const second = await tap(sys, card);
      expect(second.decision).to.equal(Decision.DECISION_ACCEPT);
      const declined = await waitFor(async () => {
        const t = (await cardTaps(sys, 'C11')).find((x) => x.tap!.tapId === second.tap!.tapId);
        return t?.state === TapState.TAP_STATE_DECLINED && t;
      });
      expect(declined.declineReason).to.equal('INSUFFICIENT_FUNDS');
      expect(declined.settlementId).to.equal('');
      // The debt puts the card on the deny list (see test/e2e/risk.test.ts for its recovery).
      const { card: held } = await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'C11' });
      expect(held!.denyListReasons).to.deep.equal([DenyListReason.DENY_LIST_REASON_DEBT]);
      expect(await balance(sys, r.accountId)).to.equal(0n);
      await sys.authorizer.checkLedger();
    });
  });

  describe('PresentCard declines offline', () => {
    async function expectDeclined(cardPromise: Promise<Parameters<typeof tap>[1]> | Parameters<typeof tap>[1], reason: DeclineReason) {
      const res = await tap(sys, await cardPromise);
      expect(res.decision).to.equal(Decision.DECISION_DECLINE);
      expect(res.declineReason).to.equal(reason);
      expect(res.tap).to.equal(undefined);
      const st = await callUnary(sys.terminalClients[0], sys.terminalClients[0].getTerminalStatus, { unsentTapsLimit: 0 });
      expect(st.acceptedTapCount).to.equal('0');
    }

    async function enrolledCard(n: number) {
      const r = rider(n);
      await openAccount(sys, r);
      return (await enroll(sys, newCard(sys, `C${n}`), r)).card;
    }

    it('declines a card with no credit flag', async () => {
      await expectDeclined(newCard(sys, 'C20'), DeclineReason.DECLINE_REASON_NO_CREDIT_FLAG);
    });

    it('declines a flag signed by someone other than the issuer', async () => {
      const { generateKeyPairSync } = await import('node:crypto');
      const forger = generateKeyPairSync('ed25519').privateKey;
      const card = newCard(sys, 'C21');
      const flag = signCreditFlag(forger, { cardId: 'C21', agreementId: 'agr_forged', version: 1, issuedAt: new Date() });
      await expectDeclined({ ...card, creditFlag: flag }, DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
    });

    it('declines a genuine flag copied onto another card', async () => {
      const enrolled = await enrolledCard(22);
      const other = newCard(sys, 'C99');
      await expectDeclined({ ...other, creditFlag: enrolled.creditFlag }, DeclineReason.DECLINE_REASON_FLAG_CARD_MISMATCH);
    });

    it('declines an expired card', async () => {
      const enrolled = await enrolledCard(23);
      await expectDeclined({ ...enrolled, expiresOn: '2020-01-01' }, DeclineReason.DECLINE_REASON_CARD_EXPIRED);
    });

    it('declines a copy of the card data without its key (the MAC fails)', async () => {
      const enrolled = await enrolledCard(24);
      const { randomBytes } = await import('node:crypto');
      await expectDeclined({ ...enrolled, cardKey: randomBytes(16) }, DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
    });

    it('sends nothing to the issuer for declined cards', async () => {
      await tap(sys, newCard(sys, 'C25'));
      await new Promise((r) => setTimeout(r, 100)); // a few forwarder intervals
      await expectGrpcError(callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C25', pageSize: 0, pageToken: '' }), status.NOT_FOUND);
    });
  });
});
