// The authorizer as a real gRPC server on port 0, called with the generated
// AuthorizerServiceClient, settling with a fake IssuerService that records
// every Settle call and can fail the first ones with UNAVAILABLE.
import { Server, ServerCredentials, credentials, status, type ServiceError, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { expect } from 'chai';
import { startAuthorizer, type AuthorizerHandle } from '../../authorizer/service.js';
import { decodeErrorDetails } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { callUnary } from '../../common/rpc.js';
import {
  AccountState,
  AgreementState,
  AuthorizerServiceClient,
  DeductDeclineReason,
  DeductStatus,
  TransferKind,
  type DeductItem,
} from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceService, SettlementItemStatus, type SettleRequest, type SettleResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { CURRENCY, ISSUER, holder, rowCounts, tempDb, type TempDb } from './helpers.js';

const money = (minorUnits: bigint | number, currencyCode = CURRENCY) => ({ currencyCode, minorUnits: String(minorUnits) });

/** An IssuerService that answers Settle with every item MATCHED, after failing the first `failFirst` calls. */
async function startFakeIssuer(failFirst = 0) {
  const calls: SettleRequest[] = [];
  let failuresLeft = failFirst;
  const server = new Server();
  const implementation = {
    settle(call: { request: SettleRequest }, callback: (err: Partial<ServiceError> | null, res?: SettleResponse) => void) {
      calls.push(call.request);
      if (failuresLeft-- > 0) return callback({ code: status.UNAVAILABLE, details: 'issuer restarting' });
      callback(null, {
        settlementId: call.request.settlementId,
        results: call.request.items.map((i) => ({ tapId: i.tapId, status: SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MATCHED, reason: '' })),
        matchedTotal: call.request.total,
        mismatchedCount: 0,
      });
    },
  };
  server.addService(IssuerServiceService, implementation as unknown as UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, calls, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

async function expectGrpcError(promise: Promise<unknown>, code: number, reason?: string): Promise<ServiceError> {
  let error: ServiceError | undefined;
  try {
    await promise;
  } catch (err) {
    error = err as ServiceError;
  }
  expect(error, 'expected the call to fail').to.not.equal(undefined);
  expect(error!.code, error!.message).to.equal(code);
  if (reason) expect(decodeErrorDetails(error!).errorInfo?.reason).to.equal(reason);
  return error!;
}

async function waitFor<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('authorizer gRPC server', () => {
  let t: TempDb;
  let authorizer: AuthorizerHandle;
  let client: AuthorizerServiceClient;
  let issuer: Awaited<ReturnType<typeof startFakeIssuer>> | undefined;

  beforeEach(async () => {
    t = await tempDb();
    // The authorizer starts before any issuer, as in the system tests.
    authorizer = await startAuthorizer({
      authorizerId: 'authorizer-1',
      databaseUrl: `${t.dir}/server.sqlite`,
      host: '127.0.0.1',
      port: 0,
      issuers: {},
      settlementIntervalMs: 20,
      log: createLogger('test'),
    });
    client = new AuthorizerServiceClient(authorizer.address, credentials.createInsecure());
  });
  afterEach(async () => {
    client.close();
    await authorizer.checkLedger();
    await authorizer.close();
    await issuer?.close();
    issuer = undefined;
    await t.close();
  });

  async function enrolledAccount(n: number, funds: bigint, creditLimit = 0n): Promise<string> {
    await callUnary(client, client.openAccount, { accountId: `acc-${n}`, holder: holder(n), currencyCode: CURRENCY, creditLimit: money(creditLimit) });
    if (funds > 0n) await callUnary(client, client.topUp, { requestId: `top-${n}`, accountId: `acc-${n}`, amount: money(funds) });
    const res = await callUnary(client, client.authorizeEnrollment, {
      requestId: `enr-${n}`,
      issuerId: ISSUER,
      accountId: `acc-${n}`,
      rider: holder(n),
      cardId: `C${n}`,
    });
    return res.agreement!.agreementId;
  }

  const fares = (agreementId: string, tapIds: string[], amount = 200): DeductItem[] =>
    tapIds.map((requestId) => ({ requestId, agreementId, amount: money(amount), tappedAt: new Date() }));

  it('opens, tops up, enrolls, debits, shows the ledger and settles with the issuer', async () => {
    const opened = await callUnary(client, client.openAccount, {
      accountId: 'acc-1',
      holder: holder(1),
      currencyCode: CURRENCY,
      creditLimit: money(500),
    });
    expect(opened.account).to.deep.include({ accountId: 'acc-1', state: AccountState.ACCOUNT_STATE_ACTIVE, available: money(500) });
    const topped = await callUnary(client, client.topUp, { requestId: 'top-1', accountId: 'acc-1', amount: money(1_000) });
    expect(topped.account!.balance).to.deep.equal(money(1_000));
    expect(topped.account!.available).to.deep.equal(money(1_500));

    const { agreement } = await callUnary(client, client.authorizeEnrollment, {
      requestId: 'enr-1',
      issuerId: ISSUER,
      accountId: 'acc-1',
      rider: { name: 'rider  1', phoneNumber: holder(1).phoneNumber },
      cardId: 'C1',
    });
    expect(agreement).to.deep.include({ accountId: 'acc-1', issuerId: ISSUER, cardId: 'C1', state: AgreementState.AGREEMENT_STATE_ACTIVE });

    const { results } = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agreement!.agreementId, ['T1:1', 'T1:2', 'T1:3']) });
    expect(results.map((r) => r.status)).to.deep.equal([DeductStatus.DEDUCT_STATUS_DEBITED, DeductStatus.DEDUCT_STATUS_DEBITED, DeductStatus.DEDUCT_STATUS_DEBITED]);

    const { account } = await callUnary(client, client.getAccount, { accountId: 'acc-1' });
    expect(account!.balance).to.deep.equal(money(400));
    const page = await callUnary(client, client.listLedgerEntries, { accountId: 'acc-1', pageSize: 3, pageToken: '' });
    expect(page.entries.map((e) => [e.kind, e.amount!.minorUnits, e.balanceAfter!.minorUnits, e.reference])).to.deep.equal([
      [TransferKind.TRANSFER_KIND_FARE, '-200', '400', 'T1:3'],
      [TransferKind.TRANSFER_KIND_FARE, '-200', '600', 'T1:2'],
      [TransferKind.TRANSFER_KIND_FARE, '-200', '800', 'T1:1'],
    ]);
    expect(page.entries[0].transferId).to.equal(results[2].deductionId);
    const rest = await callUnary(client, client.listLedgerEntries, { accountId: 'acc-1', pageSize: 3, pageToken: page.nextPageToken });
    expect(rest.entries.map((e) => e.kind)).to.deep.equal([TransferKind.TRANSFER_KIND_TOP_UP]);
    expect(rest.nextPageToken).to.equal('');

    // The issuer comes up later; the held settlement goes out once its address is known.
    issuer = await startFakeIssuer();
    authorizer.setIssuerAddress(ISSUER, issuer.address);
    const [settle] = await waitFor(() => issuer!.calls.length > 0 && issuer!.calls);
    expect(settle.authorizerId).to.equal('authorizer-1');
    expect(settle.settlementId).to.match(/^stl_/);
    expect(settle.items).to.deep.equal(results.map((r) => ({ deductionId: r.deductionId, tapId: r.requestId, amount: money(200) })));
    expect(settle.total).to.deep.equal(money(600));
    await waitFor(async () => (await authorizer.db('settlements').first('state'))?.state === 'ACKNOWLEDGED');
  });

  it('retries a settlement with the same id and items until acknowledged, and never re-sends an acknowledged one', async () => {
    issuer = await startFakeIssuer(2);
    authorizer.setIssuerAddress(ISSUER, issuer.address);
    const agr = await enrolledAccount(1, 1_000n);
    await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:1', 'T1:2']) });

    await waitFor(async () => (await authorizer.db('settlements').first('state'))?.state === 'ACKNOWLEDGED');
    expect(issuer.calls).to.have.length(3);
    expect(issuer.calls[1]).to.deep.equal(issuer.calls[0]);
    expect(issuer.calls[2]).to.deep.equal(issuer.calls[0]);

    await new Promise((r) => setTimeout(r, 150)); // several worker intervals
    expect(issuer.calls).to.have.length(3);

    await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:3']) });
    await waitFor(() => issuer!.calls.length === 4);
    expect(issuer.calls[3].settlementId).to.not.equal(issuer.calls[0].settlementId);
    expect(issuer.calls[3].items.map((i) => i.tapId)).to.deep.equal(['T1:3']);
  });

  it('answers a repeated Deduct with the first results, a reused id with REJECTED, and a shortfall with a stored decline', async () => {
    const agr = await enrolledAccount(1, 300n);
    const first = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:1', 'T1:2']) });
    expect(first.results.map((r) => r.status)).to.deep.equal([DeductStatus.DEDUCT_STATUS_DEBITED, DeductStatus.DEDUCT_STATUS_DECLINED]);
    expect(first.results[1].declineReason).to.equal(DeductDeclineReason.DEDUCT_DECLINE_REASON_INSUFFICIENT_FUNDS);

    const again = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:1', 'T1:2']) });
    expect(again).to.deep.equal(first);

    const reused = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:1'], 999) });
    expect(reused.results[0]).to.deep.include({ status: DeductStatus.DEDUCT_STATUS_REJECTED, errorReason: 'REQUEST_ID_REUSED', deductionId: '' });

    const unknown = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares('agr_unknown', ['T1:9']) });
    expect(unknown.results[0]).to.deep.include({ status: DeductStatus.DEDUCT_STATUS_REJECTED, errorReason: 'AGREEMENT_NOT_FOUND' });

    const { account } = await callUnary(client, client.getAccount, { accountId: 'acc-1' });
    expect(account!.balance).to.deep.equal(money(100));
  });

  describe('bad input changes nothing and gets a clear error', () => {
    it('Deduct: every structural problem of the batch as a field violation', async () => {
      const agr = await enrolledAccount(1, 1_000n);
      const before = await rowCounts(authorizer.db);
      const err = await expectGrpcError(
        callUnary(client, client.deduct, {
          issuerId: '',
          items: [
            { requestId: 'T1:1', agreementId: agr, amount: money(200), tappedAt: undefined },
            { requestId: '', agreementId: agr, amount: money(0), tappedAt: undefined },
            { requestId: 'T1:1', agreementId: '', amount: money(200, 'cny'), tappedAt: undefined },
            { requestId: 'T1:4', agreementId: agr, amount: undefined, tappedAt: undefined },
          ],
        }),
        status.INVALID_ARGUMENT,
        'INVALID_ARGUMENT',
      );
      expect(decodeErrorDetails(err).badRequest!.fieldViolations.map((v) => v.field)).to.deep.equal([
        'issuer_id',
        'items[1].request_id',
        'items[1].amount.minor_units',
        'items[2].request_id',
        'items[2].agreement_id',
        'items[2].amount.currency_code',
        'items[3].amount',
      ]);
      await expectGrpcError(callUnary(client, client.deduct, { issuerId: ISSUER, items: [] }), status.INVALID_ARGUMENT);
      const tooMany = fares(agr, Array.from({ length: 5001 }, (_, i) => `T1:${i}`));
      await expectGrpcError(callUnary(client, client.deduct, { issuerId: ISSUER, items: tooMany }), status.INVALID_ARGUMENT);
      expect(await rowCounts(authorizer.db)).to.deep.equal(before);
    });

    it('administration and enrollment RPCs: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS with reasons', async () => {
      await enrolledAccount(1, 1_000n);
      const before = await rowCounts(authorizer.db);
      const invalid = status.INVALID_ARGUMENT;
      await expectGrpcError(callUnary(client, client.openAccount, { accountId: '', holder: undefined, currencyCode: 'cny', creditLimit: money(-1) }), invalid);
      await expectGrpcError(callUnary(client, client.openAccount, { accountId: 'acc-2', holder: { name: 'A', phoneNumber: '12345' }, currencyCode: CURRENCY, creditLimit: undefined }), invalid);
      await expectGrpcError(callUnary(client, client.topUp, { requestId: 'top-x', accountId: 'acc-1', amount: money(0) }), invalid);
      await expectGrpcError(callUnary(client, client.setAccountState, { accountId: 'acc-1', state: AccountState.ACCOUNT_STATE_UNSPECIFIED }), invalid);
      await expectGrpcError(callUnary(client, client.listLedgerEntries, { accountId: 'acc-1', pageSize: -1, pageToken: '' }), invalid);
      await expectGrpcError(callUnary(client, client.listLedgerEntries, { accountId: 'acc-1', pageSize: 0, pageToken: 'not-a-token' }), invalid);
      await expectGrpcError(
        callUnary(client, client.authorizeEnrollment, { requestId: '', issuerId: '', accountId: '', rider: undefined, cardId: '' }),
        invalid,
      );

      await expectGrpcError(callUnary(client, client.getAccount, { accountId: 'acc-404' }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
      await expectGrpcError(callUnary(client, client.topUp, { requestId: 'top-y', accountId: 'acc-404', amount: money(1) }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
      await expectGrpcError(
        callUnary(client, client.authorizeEnrollment, { requestId: 'enr-x', issuerId: ISSUER, accountId: 'acc-1', rider: holder(2), cardId: 'C9' }),
        status.FAILED_PRECONDITION,
        'RIDER_MISMATCH',
      );
      await expectGrpcError(
        callUnary(client, client.openAccount, { accountId: 'acc-1', holder: holder(2), currencyCode: CURRENCY, creditLimit: undefined }),
        status.ALREADY_EXISTS,
        'ACCOUNT_ALREADY_EXISTS',
      );
      await expectGrpcError(callUnary(client, client.topUp, { requestId: 'top-1', accountId: 'acc-1', amount: money(5) }), status.ALREADY_EXISTS, 'REQUEST_ID_REUSED');
      await expectGrpcError(
        callUnary(client, client.authorizeEnrollment, { requestId: 'enr-1', issuerId: ISSUER, accountId: 'acc-1', rider: holder(1), cardId: 'C-other' }),
        status.ALREADY_EXISTS,
        'REQUEST_ID_REUSED',
      );
      expect(await rowCounts(authorizer.db)).to.deep.equal(before);
    });

    it('a frozen account is refused at enrollment and its fares are declined', async () => {
      const agr = await enrolledAccount(1, 1_000n);
      const frozen = await callUnary(client, client.setAccountState, { accountId: 'acc-1', state: AccountState.ACCOUNT_STATE_FROZEN });
      expect(frozen.account!.state).to.equal(AccountState.ACCOUNT_STATE_FROZEN);
      await expectGrpcError(
        callUnary(client, client.authorizeEnrollment, { requestId: 'enr-2', issuerId: ISSUER, accountId: 'acc-1', rider: holder(1), cardId: 'C2' }),
        status.FAILED_PRECONDITION,
        'ACCOUNT_FROZEN',
      );
      const { results } = await callUnary(client, client.deduct, { issuerId: ISSUER, items: fares(agr, ['T1:1']) });
      expect(results[0].declineReason).to.equal(DeductDeclineReason.DEDUCT_DECLINE_REASON_ACCOUNT_FROZEN);
    });
  });
});
