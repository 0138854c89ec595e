// Per-rider authorization at the issuer, over mTLS with real servers: the
// phone app's certificate says "this is the app"; the rider's access token
// says which rider, and a rider reaches only their own account and cards.
import { randomUUID } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decodeErrorDetails } from '../../common/errors.js';
import { callUnary } from '../../common/rpc.js';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { expectGrpcError, tableCounts, waitFor } from '../helpers/assert.js';
import { enroll, openAccount, rider, riderToken, passwordOf } from '../helpers/rider.js';
import { ISSUER_CODE, ISSUER_ID, newCard, startSystem, type System } from '../helpers/system.js';

describe('per-rider authorization at the issuer (mTLS)', function () {
  this.timeout(90_000);
  let sys: System;
  const a = rider(31);
  const b = rider(32);
  let tokenA: string;

  before(async () => {
    sys = await startSystem({ tls: true, issuer: { jwksMaxAgeMs: 300 } });
    for (const r of [a, b]) await openAccount(sys, r);
    await enroll(sys, newCard(sys, 'CA1'), a);
    await enroll(sys, newCard(sys, 'CB1'), b);
    tokenA = (await riderToken(sys, a))!;
  });
  after(() => sys.close());

  const phone = () => sys.phone.issuerClient;
  const snapshot = async () => ({ issuer: await tableCounts(sys.issuer.db), authorizer: await tableCounts(sys.authorizer.db) });
  const errorShape = (err: ServiceError, cardId: string) => {
    const info = decodeErrorDetails(err).errorInfo;
    return { code: err.code, details: err.details.replaceAll(cardId, '<card>'), reason: info?.reason, metadata: { ...info?.metadata, card_id: '<card>' } };
  };

  it("answers another rider's card exactly as an unknown card, and changes nothing", async () => {
    const c = phone();
    const before = await snapshot();
    const calls = {
      getCard: (cardId: string) => callUnary(c, c.getCard, { cardId }, undefined, tokenA),
      listCardTaps: (cardId: string) => callUnary(c, c.listCardTaps, { cardId, pageSize: 10, pageToken: '' }, undefined, tokenA),
      unenrollCard: (cardId: string) => callUnary(c, c.unenrollCard, { cardId, accountId: b.accountId }, undefined, tokenA),
      reportCardLost: (cardId: string) => callUnary(c, c.reportCardLost, { cardId, accountId: b.accountId }, undefined, tokenA),
      retryDebts: (cardId: string) => callUnary(c, c.retryDebts, { cardId }, undefined, tokenA),
    };
    for (const [name, call] of Object.entries(calls)) {
      const theirs = await expectGrpcError(call('CB1'), status.NOT_FOUND, 'CARD_NOT_FOUND');
      const unknown = await expectGrpcError(call('CZ9'), status.NOT_FOUND, 'CARD_NOT_FOUND');
      expect(errorShape(theirs, 'CB1'), name).to.deep.equal(errorShape(unknown, 'CZ9'));
    }
    expect(await snapshot()).to.deep.equal(before);
    // B's card is as it was: B reads it, enrolled, with its own token.
    const { card } = await callUnary(c, c.getCard, { cardId: 'CB1' }, undefined, (await riderToken(sys, b))!);
    expect(card!.enrollment!.accountId).to.equal(b.accountId);
  });

  it("refuses enrolling a card into another rider's account, storing nothing", async () => {
    const before = await snapshot();
    const emulator = new CardEmulator(newCard(sys, 'CA2'));
    const { proof } = readForEnrollment(emulator);
    const c = phone();
    await expectGrpcError(
      callUnary(
        c,
        c.enrollCard,
        { requestId: randomUUID(), card: { issuerCode: ISSUER_CODE, expiresOn: emulator.card.expiresOn, proof }, rider: { name: b.name, phoneNumber: b.phoneNumber }, accountId: b.accountId },
        undefined,
        tokenA,
      ),
      status.PERMISSION_DENIED,
      'PEER_IDENTITY_MISMATCH',
    );
    expect(await snapshot()).to.deep.equal(before);
  });

  it("serves a rider's own card, and ops any card without a token", async () => {
    const c = phone();
    const { card } = await callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, tokenA);
    expect(card!.enrollment!.accountId).to.equal(a.accountId);
    await callUnary(c, c.listCardTaps, { cardId: 'CA1', pageSize: 10, pageToken: '' }, undefined, tokenA);
    await callUnary(c, c.retryDebts, { cardId: 'CA1' }, undefined, tokenA);
    const ops = sys.issuerClient;
    expect((await callUnary(ops, ops.getCard, { cardId: 'CB1' })).card!.enrollment!.accountId).to.equal(b.accountId);
  });

  it('refuses a rider call without a token, or with a malformed, tampered or wrong-audience one: UNAUTHENTICATED', async () => {
    const c = phone();
    await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CA1' }), status.UNAUTHENTICATED, 'ACCESS_TOKEN_MISSING');
    await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, 'garbage'), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    const [h, p, s] = tokenA.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const asB = [h, Buffer.from(JSON.stringify({ ...claims, sub: b.accountId })).toString('base64url'), s].join('.');
    await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CB1' }, undefined, asB), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    // A token the authorizer made for another issuer.
    sys.authorizer.setIssuerAddress('issuer-2', '127.0.0.1:1');
    const pc = sys.phone.authorizerClient;
    const other = await callUnary(pc, pc.signIn, { accountId: a.accountId, password: passwordOf(a), audience: 'issuer-2' });
    await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, other.tokens!.accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
  });

  it('takes a token of a rotated key at once and refuses one of a retired key without a restart', async () => {
    const c = phone();
    const pc = sys.phone.authorizerClient;
    const signIn = async () => (await callUnary(pc, pc.signIn, { accountId: a.accountId, password: passwordOf(a), audience: ISSUER_ID })).tokens!.accessToken;
    const old = await signIn();
    await callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, old);
    await callUnary(sys.authorizerClient, sys.authorizerClient.rotateSigningKey, { retirePrevious: false });
    const fresh = await signIn();
    await callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, fresh);
    await callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, old);
    await callUnary(sys.authorizerClient, sys.authorizerClient.rotateSigningKey, { retirePrevious: true });
    await waitFor(async () => {
      await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, old), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
      return true;
    });
    await callUnary(c, c.getCard, { cardId: 'CA1' }, undefined, await signIn());
  });
});
