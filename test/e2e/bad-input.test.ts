// Bad input on every RPC gets a clear error (code + ErrorInfo reason, and
// BadRequest field violations for INVALID_ARGUMENT) and changes nothing.
import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { MAX_ERROR_MESSAGE, MAX_REPORTED_VIOLATIONS, decodeErrorDetails } from '../../common/errors.js';
import { presentCard, presentCardImage } from '../../common/present-card.js';
import { callUnary } from '../../common/rpc.js';
import { AccountState } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { enroll, openAccount, rider } from '../helpers/rider.js';
import { ISSUER_ID, expectGrpcError, money, newCard, startSystem, tableCounts, type System } from '../helpers/system.js';
import { backends } from '../helpers/databases.js';

for (const backend of backends())
  describe(`bad input (${backend})`, function () {
  let sys: System;
  let agreementId: string;
  before(async () => {
    sys = await startSystem({ backend });
    const r = rider(1);
    await openAccount(sys, r);
    agreementId = (await enroll(sys, newCard(sys, 'C1'), r)).card.creditFlag!.agreementId;
  });
  after(async () => {
    await sys.close();
  });

  async function snapshot() {
    return {
      authorizer: await tableCounts(sys.authorizer.db),
      issuer: await tableCounts(sys.issuer.db),
      terminal: await tableCounts(sys.terminals[0].db),
    };
  }

  /** Calls, expects the code and reason, checks field violations name `field`, and that no table changed. */
  async function refused(call: () => Promise<unknown>, code: status, reason: string, field?: string) {
    const before = await snapshot();
    const err: ServiceError = await expectGrpcError(call(), code, reason);
    if (field) {
      const violations = decodeErrorDetails(err).badRequest?.fieldViolations.map((v) => v.field) ?? [];
      expect(violations, err.message).to.include(field);
    }
    expect(await snapshot()).to.deep.equal(before);
  }

  const A = () => sys.authorizerClient;
  const I = () => sys.issuerClient;
  const T = () => sys.terminalClients[0];

  describe('AuthorizerService', () => {
    it('OpenAccount: bad currency, missing holder, negative credit limit', async () => {
      await refused(() => callUnary(A(), A().openAccount, { accountId: 'acc-x', holder: { name: 'X', phoneNumber: '+8613800000009' }, currencyCode: 'cny', creditLimit: money(0n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'currency_code');
      await refused(() => callUnary(A(), A().openAccount, { accountId: 'acc-x', holder: undefined, currencyCode: 'CNY', creditLimit: money(0n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'holder');
      await refused(() => callUnary(A(), A().openAccount, { accountId: 'acc-x', holder: { name: 'X', phoneNumber: '+8613800000009' }, currencyCode: 'CNY', creditLimit: money(-1n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'credit_limit.minor_units');
    });

    it('TopUp: zero amount, missing request id, unknown account', async () => {
      await refused(() => callUnary(A(), A().topUp, { requestId: 'r1', accountId: 'acc-1', amount: money(0n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'amount.minor_units');
      await refused(() => callUnary(A(), A().topUp, { requestId: '', accountId: 'acc-1', amount: money(5n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'request_id');
      await refused(() => callUnary(A(), A().topUp, { requestId: 'r2', accountId: 'acc-nobody', amount: money(5n) }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
    });

    it('SetAccountState: state UNSPECIFIED, unknown account', async () => {
      await refused(() => callUnary(A(), A().setAccountState, { accountId: 'acc-1', state: AccountState.ACCOUNT_STATE_UNSPECIFIED }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'state');
      await refused(() => callUnary(A(), A().setAccountState, { accountId: 'acc-nobody', state: AccountState.ACCOUNT_STATE_FROZEN }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
    });

    it('GetAccount and ListLedgerEntries: missing or unknown account', async () => {
      await refused(() => callUnary(A(), A().getAccount, { accountId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'account_id');
      await refused(() => callUnary(A(), A().getAccount, { accountId: 'acc-nobody' }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
      await refused(() => callUnary(A(), A().listLedgerEntries, { accountId: 'acc-nobody', pageSize: 0, pageToken: '' }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
    });

    it('AuthorizeEnrollment: missing request id, unknown account', async () => {
      const rq = { requestId: 'ae-1', issuerId: ISSUER_ID, accountId: 'acc-1', rider: { name: 'Rider 1', phoneNumber: rider(1).phoneNumber }, cardId: 'C5' };
      await refused(() => callUnary(A(), A().authorizeEnrollment, { ...rq, requestId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'request_id');
      await refused(() => callUnary(A(), A().authorizeEnrollment, { ...rq, accountId: 'acc-nobody' }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
    });

    it('Deduct: negative amount, empty batch, missing request id', async () => {
      const item = { requestId: 'T5:1', agreementId, amount: money(-5n), tappedAt: new Date() };
      await refused(() => callUnary(A(), A().deduct, { issuerId: ISSUER_ID, items: [item] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'items[0].amount.minor_units');
      await refused(() => callUnary(A(), A().deduct, { issuerId: ISSUER_ID, items: [] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'items');
      await refused(() => callUnary(A(), A().deduct, { issuerId: ISSUER_ID, items: [{ ...item, amount: money(5n), requestId: '' }] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'items[0].request_id');
    });
  });

  describe('IssuerService', () => {
    it('EnrollCard: missing request id, unknown account', async () => {
      await refused(() => enroll(sys, newCard(sys, 'C6'), rider(1), ''), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'request_id');
      await refused(() => enroll(sys, newCard(sys, 'C6'), { ...rider(1), accountId: 'acc-nobody' }), status.NOT_FOUND, 'ACCOUNT_NOT_FOUND');
    });

    it('oversized input gets a bounded error at once, and the channel goes on working', async () => {
      // Errors travel in HTTP/2 trailers, which peers cap: quoting a huge field or listing thousands of violations would lose the answer.
      const huge = { ...newCard(sys, 'C8'), issuerCode: 'X'.repeat(70_000) };
      await refused(() => enroll(sys, huge, rider(1)), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'card.issuer_code');

      const bad = Array.from({ length: 5000 }, (_, i) => ({ tapId: `T1:${i + 1}`, terminalId: 'T1', terminalSequence: String(i + 1), cardId: 'C1', agreementId, fare: money(200n, 'xx'), tappedAt: undefined, proof: undefined }));
      const before = await snapshot();
      const err = await expectGrpcError(callUnary(I(), I().tapReport, { terminalId: 'T1', taps: bad }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
      expect(await snapshot()).to.deep.equal(before);
      const details = decodeErrorDetails(err);
      expect(details.badRequest?.fieldViolations).to.have.length(MAX_REPORTED_VIOLATIONS);
      expect(Number(details.errorInfo?.metadata.violation_count)).to.be.greaterThan(5000);
      expect(err.details.length).to.be.at.most(MAX_ERROR_MESSAGE);
      expect(err.details).to.match(/; and \d+ more$/);

      const { card } = await callUnary(I(), I().getCard, { cardId: 'C1' });
      expect(card?.cardId).to.equal('C1');
    });

    it('TapReport: empty batch, missing terminal id', async () => {
      await refused(() => callUnary(I(), I().tapReport, { terminalId: 'T1', taps: [] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'taps');
      await refused(() => callUnary(I(), I().tapReport, { terminalId: '', taps: [] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'terminal_id');
    });

    it('Settle: a total that is not the sum of the items, missing settlement id', async () => {
      const item = { deductionId: 'ded_1', tapId: 'T1:1', amount: money(200n) };
      await refused(() => callUnary(I(), I().settle, { settlementId: 'stl_1', authorizerId: 'authorizer-1', items: [item], total: money(201n) }), status.INVALID_ARGUMENT, 'TOTAL_MISMATCH', 'total');
      await refused(() => callUnary(I(), I().settle, { settlementId: '', authorizerId: 'authorizer-1', items: [item], total: money(200n) }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'settlement_id');
    });

    it('GetCard and ListCardTaps: missing or unknown card', async () => {
      await refused(() => callUnary(I(), I().getCard, { cardId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'card_id');
      await refused(() => callUnary(I(), I().getCard, { cardId: 'C-nobody' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
      await refused(() => callUnary(I(), I().listCardTaps, { cardId: 'C-nobody', pageSize: 0, pageToken: '' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
    });
  });

  describe('TerminalService', () => {
    it('PresentCard: no answer, a card without id', async () => {
      await refused(() => presentCard(T(), { answer: () => undefined! }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'answer');
      await refused(() => presentCardImage(T(), { ...newCard(sys, 'C7'), cardId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'answer.read.card_id');
    });

    it('GetTerminalStatus: a negative limit', async () => {
      await refused(() => callUnary(T(), T().getTerminalStatus, { unsentTapsLimit: -1 }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'unsent_taps_limit');
    });
  });
});
