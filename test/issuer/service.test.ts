// The real issuer server on port 0, against a fake AuthorizerService (also a
// real gRPC server on port 0) that can be told to decline or to be down.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { verifyCreditFlag } from '../../common/card.js';
import { ApiError, apiError, decodeErrorDetails } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { callUnary } from '../../common/rpc.js';
import { startServer, unaryHandlers, type AsyncHandlers, type RunningServer } from '../../common/server.js';
import {
  AuthorizerServiceService,
  DeductDeclineReason,
  type AuthorizerServiceServer,
} from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient, TapReportStatus, TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { startIssuer, type IssuerHandle } from '../../issuer/service.js';
import { CURRENCY, declineWith, enrollRequest, FakeAuthorizer, ISSUER_CODE, ISSUER_ID, money, newCard, tableCounts, tapsOf } from './fixtures.js';

const log = createLogger('test');

/** Serves a FakeAuthorizer over gRPC; errors it throws reach the issuer as real gRPC statuses. */
async function startFakeAuthorizer(fake: FakeAuthorizer): Promise<RunningServer> {
  const unimplemented = async (): Promise<never> => {
    throw new ApiError(status.UNIMPLEMENTED, 'UNIMPLEMENTED', 'not part of the fake');
  };
  const handlers: AsyncHandlers<AuthorizerServiceServer> = {
    authorizeEnrollment: (req) => fake.authorizeEnrollment(req),
    deduct: (req) => fake.deduct(req),
    revokeAgreement: (req) => fake.revokeAgreement(req),
    openAccount: unimplemented,
    topUp: unimplemented,
    setAccountState: unimplemented,
    getAccount: unimplemented,
    listLedgerEntries: unimplemented,
    setRiderPassword: unimplemented,
    signIn: unimplemented,
    refreshToken: unimplemented,
    signOut: unimplemented,
    getJwks: unimplemented,
    rotateSigningKey: unimplemented,
    listAuditEntries: unimplemented,
  };
  return startServer({
    services: [
      {
        name: 'tapcredit.authorizer.v1.AuthorizerService',
        definition: AuthorizerServiceService,
        implementation: unaryHandlers<AuthorizerServiceServer>('authorizer.tapcredit', log, handlers),
      },
    ],
    host: '127.0.0.1',
    port: 0,
    log,
  });
}

async function waitFor<T>(check: () => Promise<T | undefined | false>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function grpcError(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail');
}

describe('issuer server (gRPC) against a fake authorizer', () => {
  let dir: string;
  let fake: FakeAuthorizer;
  let authorizer: RunningServer;
  let issuer: IssuerHandle;
  let client: IssuerServiceClient;
  const masterKey = randomBytes(32);
  const { privateKey: signingKey, publicKey } = generateKeyPairSync('ed25519');

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapcredit-issuer-svc-'));
    fake = new FakeAuthorizer();
    authorizer = await startFakeAuthorizer(fake);
    issuer = await startIssuer({
      issuerId: ISSUER_ID,
      issuerCode: ISSUER_CODE,
      currencyCode: CURRENCY,
      databaseUrl: join(dir, 'issuer.sqlite'),
      host: '127.0.0.1',
      port: 0,
      authorizerAddress: authorizer.address,
      masterKey,
      signingKey,
      deductIntervalMs: 20,
      log,
    });
    client = new IssuerServiceClient(issuer.address, credentials.createInsecure());
  });

  afterEach(async () => {
    client.close();
    await issuer.close();
    await authorizer.close(0);
    rmSync(dir, { recursive: true, force: true });
  });

  const call = {
    enroll: (req: Parameters<IssuerServiceClient['enrollCard']>[0]) => callUnary(client, client.enrollCard, req),
    report: (req: Parameters<IssuerServiceClient['tapReport']>[0]) => callUnary(client, client.tapReport, req),
    settle: (req: Parameters<IssuerServiceClient['settle']>[0]) => callUnary(client, client.settle, req),
    taps: (cardId: string) => callUnary(client, client.listCardTaps, { cardId, pageSize: 0, pageToken: '' }),
    card: (cardId: string) => callUnary(client, client.getCard, { cardId }),
  };

  async function enrollC1() {
    const enrolled = enrollRequest(newCard(masterKey, 'C1'), 'req-1');
    const response = await call.enroll(enrolled.request);
    return { card: enrolled.card, response };
  }

  it('enrolls a card, debits its taps through the worker and settles them', async () => {
    const { card, response } = await enrollC1();
    expect(verifyCreditFlag(publicKey, response.creditFlag!)).to.equal(true);
    expect((await call.card('C1')).card?.enrollment?.agreementId).to.equal(response.enrollment!.agreementId);

    const { taps } = tapsOf(card, response.enrollment!.agreementId, 'T1', 1, 3);
    const report = await call.report({ terminalId: 'T1', taps });
    expect(report.results.map((r) => r.status)).to.deep.equal(Array(3).fill(TapReportStatus.TAP_REPORT_STATUS_STORED));

    await waitFor(async () => (await call.taps('C1')).taps.every((h) => h.state === TapState.TAP_STATE_DEDUCTED));
    const settled = await call.settle({
      settlementId: 'S1',
      authorizerId: 'authorizer-1',
      items: taps.map((tap) => ({ deductionId: `ded-${tap.tapId}`, tapId: tap.tapId, amount: money(200) })),
      total: money(600),
    });
    expect(settled.matchedTotal).to.deep.equal(money(600));
    expect((await call.taps('C1')).taps.map((h) => h.state)).to.deep.equal(Array(3).fill(TapState.TAP_STATE_SETTLED));
    expect([...fake.sentCounts().values()]).to.deep.equal([1, 1, 1]);
  });

  it('shows a declined debit as DECLINED with the reason', async () => {
    const { card, response } = await enrollC1();
    fake.decide = declineWith(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS);
    await call.report({ terminalId: 'T1', taps: tapsOf(card, response.enrollment!.agreementId, 'T1', 1, 1).taps });
    const [tap] = await waitFor(async () => {
      const { taps } = await call.taps('C1');
      return taps[0]?.state === TapState.TAP_STATE_DECLINED && taps;
    });
    expect(tap.declineReason).to.equal('INSUFFICIENT_FUNDS');
  });

  it('keeps taps DEDUCTING while the authorizer is down and debits each once it is back', async () => {
    const { card, response } = await enrollC1();
    fake.failWith = new ApiError(status.UNAVAILABLE, 'OVERLOADED', 'try later');
    await call.report({ terminalId: 'T1', taps: tapsOf(card, response.enrollment!.agreementId, 'T1', 1, 2).taps });
    await waitFor(async () => fake.deductCalls.length >= 2);
    expect((await call.taps('C1')).taps.map((h) => h.state)).to.deep.equal([TapState.TAP_STATE_DEDUCTING, TapState.TAP_STATE_DEDUCTING]);

    fake.failWith = undefined;
    await waitFor(async () => (await call.taps('C1')).taps.every((h) => h.state === TapState.TAP_STATE_DEDUCTED), 10_000);
    // Every attempt carried the same request ids; the authorizer debited each once.
    expect(new Set(fake.deductCalls.flatMap((c) => c.items.map((i) => i.requestId)))).to.deep.equal(new Set(['T1:1', 'T1:2']));
  });

  it("passes the authorizer's enrollment refusal on with its code and reason, and stores nothing", async () => {
    fake.enrollError = apiError('RIDER_MISMATCH', 'the rider does not hold this account', { account_id: 'acc-1' });
    const counts = await tableCounts(issuer.db);
    const err = await grpcError(call.enroll(enrollRequest(newCard(masterKey, 'C1'), 'req-1').request));
    expect(err.code).to.equal(status.FAILED_PRECONDITION);
    expect(decodeErrorDetails(err).errorInfo).to.deep.include({ reason: 'RIDER_MISMATCH', domain: 'issuer.tapcredit' });
    expect(err.details).to.equal('the rider does not hold this account');
    expect(await tableCounts(issuer.db)).to.deep.equal(counts);
    const notFound = await grpcError(call.card('C1'));
    expect([notFound.code, decodeErrorDetails(notFound).errorInfo?.reason]).to.deep.equal([status.NOT_FOUND, 'CARD_NOT_FOUND']);
  });

  it('answers UNAVAILABLE AUTHORIZER_UNAVAILABLE when the authorizer cannot be reached', async () => {
    await authorizer.close(0);
    const err = await grpcError(call.enroll(enrollRequest(newCard(masterKey, 'C1'), 'req-1').request));
    expect([err.code, decodeErrorDetails(err).errorInfo?.reason]).to.deep.equal([status.UNAVAILABLE, 'AUTHORIZER_UNAVAILABLE']);
  });

  it('maps bad input to INVALID_ARGUMENT with field violations', async () => {
    const err = await grpcError(call.report({ terminalId: 'T1', taps: [] }));
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(decodeErrorDetails(err).badRequest?.fieldViolations.map((v) => v.field)).to.deep.equal(['taps']);
  });
});
