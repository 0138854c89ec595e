// Per-identity rate limits (common/rate-limit.ts) on real servers over mTLS:
// one rider hammering the issuer is refused RESOURCE_EXHAUSTED with RetryInfo
// while other riders are served; enrollment attempts per card are bounded.
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { decodeErrorDetails } from '../../common/errors.js';
import { callUnary } from '../../common/rpc.js';
import { expectGrpcError } from '../helpers/assert.js';
import { enroll, openAccount, rider, riderToken } from '../helpers/rider.js';
import { ISSUER_CODE, newCard, startSystem, type System } from '../helpers/system.js';

describe('rate limits (mTLS)', function () {
  this.timeout(60_000);
  let sys: System;
  const a = rider(51);
  const b = rider(52);
  before(async () => {
    sys = await startSystem({ tls: true, issuer: { riderCallsPerSecond: 5, enrollmentsPerCardPerHour: 2 } });
    for (const r of [a, b]) await openAccount(sys, r);
    await enroll(sys, newCard(sys, 'CR1'), a);
    await enroll(sys, newCard(sys, 'CR2'), b);
  });
  after(() => sys.close());

  it('refuses a hammering rider with RESOURCE_EXHAUSTED and RetryInfo, while another rider is served', async () => {
    const c = sys.phone.issuerClient;
    const tokenA = (await riderToken(sys, a))!;
    const tokenB = (await riderToken(sys, b))!;
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => callUnary(c, c.getCard, { cardId: 'CR1' }, undefined, tokenA)));
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason);
    // At most 5 a second are served (a call of A's just before may have used one of them).
    expect(refused.length, 'calls refused').to.be.within(25, 26);
    for (const err of refused) {
      expect(err.code).to.equal(status.RESOURCE_EXHAUSTED);
      const details = decodeErrorDetails(err);
      expect(details.errorInfo?.reason).to.equal('RATE_LIMITED');
      const delayMs = Number(details.retryInfo!.retryDelay!.seconds) * 1000 + details.retryInfo!.retryDelay!.nanos / 1e6;
      expect(delayMs).to.be.within(1, 1000);
    }
    // Rider B shares the phone app's certificate and is served all the same; so is ops.
    await callUnary(c, c.getCard, { cardId: 'CR2' }, undefined, tokenB);
    await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'CR1' });
  });

  it('bounds enrollment attempts per card', async () => {
    const emulator = new CardEmulator(newCard(sys, 'CR3'));
    const token = await riderToken(sys, a);
    const c = sys.phone.issuerClient;
    await new Promise((r) => setTimeout(r, 1100)); // past the per-second limit the last test used up
    const attempt = () => {
      const { proof } = readForEnrollment(emulator);
      const req = { requestId: randomUUID(), card: { issuerCode: ISSUER_CODE, expiresOn: emulator.card.expiresOn, proof }, rider: { name: 'Not The Holder', phoneNumber: a.phoneNumber }, accountId: a.accountId };
      return callUnary(c, c.enrollCard, req, undefined, token);
    };
    await expectGrpcError(attempt(), status.FAILED_PRECONDITION, 'RIDER_MISMATCH');
    await new Promise((r) => setTimeout(r, 1100)); // past the per-second limit
    await expectGrpcError(attempt(), status.FAILED_PRECONDITION, 'RIDER_MISMATCH');
    await new Promise((r) => setTimeout(r, 1100));
    await expectGrpcError(attempt(), status.RESOURCE_EXHAUSTED, 'RATE_LIMITED');
  });
});
