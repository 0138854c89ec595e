import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { verifyCreditFlag } from '../../common/card.js';
import { apiError } from '../../common/errors.js';
import { CardState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { getCard } from '../../issuer/cards.js';
import { authorizerRequestId, enrollCard, ENROLLMENT_CLAIM_TTL_MS, sweepAbandonedEnrollments } from '../../issuer/enrollment.js';
import { authorizerDown, enrollRequest, expectApiError, FakeAuthorizer, ISSUER_ID, newCard, openTestIssuer, RIDER, tableCounts, type TestIssuer } from './fixtures.js';

describe('issuer: EnrollCard', () => {
  let t: TestIssuer;
  beforeEach(async () => (t = await openTestIssuer()));
  afterEach(() => t.close());

  it('binds card and agreement and returns a credit flag signed by the issuer', async () => {
    const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const response = await enrollCard(t.ctx, request);

    const agreementId = FakeAuthorizer.agreementFor(authorizerRequestId(ISSUER_ID, 'req-1'));
    expect(response.enrollment).to.include({ cardId: 'C1', accountId: 'acc-1', agreementId });
    expect(response.creditFlag).to.include({ cardId: 'C1', agreementId, version: 1 });
    expect(verifyCreditFlag(t.publicKey, response.creditFlag!)).to.equal(true);
    expect(t.authorizer.enrollCalls).to.have.length(1);
    expect(t.authorizer.enrollCalls[0]).to.deep.include({ issuerId: ISSUER_ID, accountId: 'acc-1', cardId: 'C1', rider: RIDER });

    const { card } = await getCard(t.ctx, { cardId: 'C1' });
    expect(card).to.deep.include({ cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2099-12-31', state: CardState.CARD_STATE_ENROLLED, lastCounter: '1' });
    expect(card!.enrollment).to.deep.equal(response.enrollment);
  });

  it("keeps the account and agreement but not the rider's name or phone", async () => {
    await enrollCard(t.ctx, enrollRequest(newCard(t.masterKey, 'C1'), 'req-1').request);
    const stored = JSON.stringify([await t.db('enrollments').select(), await t.db('cards').select()]);
    expect(stored).to.not.contain(RIDER.name);
    expect(stored).to.not.contain(RIDER.phoneNumber);
  });

  it('answers a repeated request with the first response, flag bytes included, without asking the authorizer twice', async () => {
    const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const first = await enrollCard(t.ctx, request);
    const counts = await tableCounts(t.db);
    const again = await enrollCard(t.ctx, request);
    expect(again).to.deep.equal(first);
    expect(Buffer.compare(again.creditFlag!.signature, first.creditFlag!.signature)).to.equal(0);
    expect(t.authorizer.enrollCalls).to.have.length(1);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  it('treats a retry that read the card again (new counter and MAC) as the same request', async () => {
    const card = newCard(t.masterKey, 'C1');
    const first = enrollRequest(card, 'req-1');
    const response = await enrollCard(t.ctx, first.request);
    expect(await enrollCard(t.ctx, enrollRequest(first.card, 'req-1').request)).to.deep.equal(response);
    expect(t.authorizer.enrollCalls).to.have.length(1);
  });

  it('answers a repeat only when its proof verifies too', async () => {
    const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    await enrollCard(t.ctx, request);
    const forged = { ...request, card: { ...request.card!, proof: { ...request.card!.proof!, mac: randomBytes(8) } } };
    await expectApiError(enrollCard(t.ctx, forged), status.FAILED_PRECONDITION, 'CARD_AUTHENTICATION_FAILED');
  });

  it('refuses the same request id with another payload (REQUEST_ID_REUSED)', async () => {
    await enrollCard(t.ctx, enrollRequest(newCard(t.masterKey, 'C1'), 'req-1').request);
    const otherCard = enrollRequest(newCard(t.masterKey, 'C2'), 'req-1').request;
    await expectApiError(enrollCard(t.ctx, otherCard), status.ALREADY_EXISTS, 'REQUEST_ID_REUSED');
    const otherAccount = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1', 'acc-2').request;
    await expectApiError(enrollCard(t.ctx, otherAccount), status.ALREADY_EXISTS, 'REQUEST_ID_REUSED');
  });

  it('asks the authorizer with the same derived request id when a failed enrollment is retried', async () => {
    const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    t.authorizer.failWith = authorizerDown();
    await expectApiError(enrollCard(t.ctx, request), status.UNAVAILABLE, 'AUTHORIZER_UNAVAILABLE');
    t.authorizer.failWith = undefined;
    await enrollCard(t.ctx, request);
    expect(t.authorizer.enrollCalls.map((c) => c.requestId)).to.deep.equal([authorizerRequestId(ISSUER_ID, 'req-1'), authorizerRequestId(ISSUER_ID, 'req-1')]);
  });

  it('refuses a card that is already enrolled under another request', async () => {
    const first = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    await enrollCard(t.ctx, first.request);
    const counts = await tableCounts(t.db);
    await expectApiError(enrollCard(t.ctx, enrollRequest(first.card, 'req-2').request), status.FAILED_PRECONDITION, 'CARD_ALREADY_ENROLLED');
    expect(t.authorizer.enrollCalls).to.have.length(1);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  describe('leaves no orphaned agreement at the authorizer', () => {
    it('claims the card before asking the authorizer: a concurrent enrollment under another request id asks for no agreement', async () => {
      const first = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
      const second = enrollRequest(first.card, 'req-2');
      // The first enrollment's call to the authorizer is still out when the second arrives.
      const authorize = t.authorizer.authorizeEnrollment.bind(t.authorizer);
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      t.authorizer.authorizeEnrollment = async (req) => {
        if (req.requestId === authorizerRequestId(ISSUER_ID, 'req-1')) await held;
        return authorize(req);
      };
      const winner = enrollCard(t.ctx, first.request);
      await new Promise((r) => setTimeout(r, 50));
      await expectApiError(enrollCard(t.ctx, second.request), status.ABORTED, 'ENROLLMENT_IN_PROGRESS');
      release();
      await winner;
      expect(t.authorizer.enrollCalls.map((c) => c.requestId), 'one agreement asked for').to.deep.equal([authorizerRequestId(ISSUER_ID, 'req-1')]);
      expect(await t.db('enrollment_claims').count({ n: '*' })).to.deep.equal([{ n: 0 }]);
    });

    it('revokes the agreement of an enrollment abandoned after the authorizer made it, and frees the card', async () => {
      let clock = Date.parse('2030-03-10T02:00:00Z');
      t.ctx.now = () => new Date(clock);
      const first = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
      // The authorizer made the agreement, but its answer never came back (or the issuer crashed before its commit).
      const authorize = t.authorizer.authorizeEnrollment.bind(t.authorizer);
      t.authorizer.authorizeEnrollment = async (req) => {
        await authorize(req);
        throw authorizerDown();
      };
      await expectApiError(enrollCard(t.ctx, first.request), status.UNAVAILABLE, 'AUTHORIZER_UNAVAILABLE');
      t.authorizer.authorizeEnrollment = authorize;
      const second = enrollRequest(first.card, 'req-2');
      await expectApiError(enrollCard(t.ctx, second.request), status.ABORTED, 'ENROLLMENT_IN_PROGRESS');

      expect(await sweepAbandonedEnrollments(t.ctx), 'the claim is still live').to.equal(0);
      clock += ENROLLMENT_CLAIM_TTL_MS;
      expect(await sweepAbandonedEnrollments(t.ctx)).to.equal(1);
      const orphan = FakeAuthorizer.agreementFor(authorizerRequestId(ISSUER_ID, 'req-1'));
      expect(t.authorizer.revokeCalls).to.deep.equal([{ issuerId: ISSUER_ID, agreementId: orphan }]);
      expect(await sweepAbandonedEnrollments(t.ctx), 'done once').to.equal(0);
      expect(t.authorizer.revokeCalls).to.have.length(1);

      // The abandoned request id is dead; the card enrolls under a new one.
      await expectApiError(enrollCard(t.ctx, enrollRequest(second.card, 'req-1').request), status.ABORTED, 'ENROLLMENT_ABANDONED');
      const response = await enrollCard(t.ctx, enrollRequest(second.card, 'req-3').request);
      expect(response.enrollment!.agreementId).to.not.equal(orphan);
    });

    it('frees the card at once when the authorizer refuses for good, and retries keep the claim', async () => {
      const first = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
      t.authorizer.enrollError = apiError('ACCOUNT_NOT_ELIGIBLE', 'no');
      await expectApiError(enrollCard(t.ctx, first.request), status.FAILED_PRECONDITION, 'ACCOUNT_NOT_ELIGIBLE');
      expect(await t.db('enrollment_claims').count({ n: '*' })).to.deep.equal([{ n: 0 }]);
      t.authorizer.enrollError = undefined;
      await enrollCard(t.ctx, enrollRequest(first.card, 'req-2').request);
    });
  });

  it('refuses a proof whose counter is not above the highest the issuer has seen (a replayed reading)', async () => {
    const card = newCard(t.masterKey, 'C1');
    const old = enrollRequest(card, 'req-old');
    await enrollCard(t.ctx, enrollRequest(old.card, 'req-1').request); // counter 2 now seen
    await t.db('cards').update({ enrollment_request_id: null }); // as if unenrolled
    await expectApiError(enrollCard(t.ctx, old.request), status.FAILED_PRECONDITION, 'CARD_PROOF_REPLAYED');
  });

  describe('refuses, storing nothing and not asking the authorizer', () => {
    const cases: [string, (t: TestIssuer) => ReturnType<typeof enrollRequest>['request'], number, string][] = [
      ['a card of another issuer', (t) => enrollRequest({ ...newCard(t.masterKey, 'C1'), issuerCode: 'CITY2' }, 'r').request, status.FAILED_PRECONDITION, 'WRONG_ISSUER'],
      ['an expired card', (t) => enrollRequest(newCard(t.masterKey, 'C1', '2020-01-31'), 'r').request, status.FAILED_PRECONDITION, 'CARD_EXPIRED'],
      ['a card whose key is not from the master key', (t) => enrollRequest({ ...newCard(t.masterKey, 'C1'), cardKey: randomBytes(16) }, 'r').request, status.FAILED_PRECONDITION, 'CARD_AUTHENTICATION_FAILED'],
      [
        'a proof altered after the card computed it',
        (t) => {
          const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'r');
          return { ...request, card: { ...request.card!, proof: { ...request.card!.proof!, cardId: 'C9' } } };
        },
        status.FAILED_PRECONDITION,
        'CARD_AUTHENTICATION_FAILED',
      ],
    ];
    for (const [name, build, code, reason] of cases) {
      it(name, async () => {
        const counts = await tableCounts(t.db);
        await expectApiError(enrollCard(t.ctx, build(t)), code, reason);
        expect(t.authorizer.enrollCalls).to.have.length(0);
        expect(await tableCounts(t.db)).to.deep.equal(counts);
      });
    }
  });

  it('names every bad field in one INVALID_ARGUMENT', async () => {
    const { request } = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const bad = {
      requestId: '',
      accountId: 'bad account',
      rider: { name: ' ', phoneNumber: '13800138000' },
      card: {
        issuerCode: 'CITY1',
        expiresOn: '2099-02-30',
        proof: { ...request.card!.proof!, terminalId: 'T1', mac: Buffer.alloc(4), terminalRandom: Buffer.alloc(0) },
      },
    };
    const err = await expectApiError(enrollCard(t.ctx, bad), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.have.members([
      'request_id',
      'account_id',
      'rider.name',
      'rider.phone_number',
      'card.expires_on',
      'card.proof.terminal_id',
      'card.proof.terminal_random',
      'card.proof.mac',
    ]);
    const missing = await expectApiError(enrollCard(t.ctx, { requestId: 'r', accountId: 'a', rider: undefined, card: undefined }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(missing.fieldViolations.map((v) => v.field)).to.have.members(['rider', 'card']);
    expect(t.authorizer.enrollCalls).to.have.length(0);
  });

  it("passes the authorizer's refusal on with its code and reason and stores nothing", async () => {
    t.authorizer.enrollError = apiError('RIDER_MISMATCH', 'the rider does not hold this account');
    const counts = await tableCounts(t.db);
    await expectApiError(enrollCard(t.ctx, enrollRequest(newCard(t.masterKey, 'C1'), 'req-1').request), status.FAILED_PRECONDITION, 'RIDER_MISMATCH');
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });
});
