// Every mutation is idempotent by its id: a repeat returns the first result
// and charges nothing twice; an id reused for another payload is refused.
import { expect } from 'chai';
import { newTerminalRandom, zeroAmountDebit } from '../../common/card.js';
import { callUnary } from '../../common/rpc.js';
import { DeductStatus, TransferKind } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { TapReportStatus, TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import { enroll, openAccount, rider } from '../helpers/rider.js';
import { FARE, ISSUER_ID, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';
import { backends } from '../helpers/databases.js';

for (const backend of backends())
  describe(`idempotency (${backend})`, function () {
  let sys: System;
  beforeEach(async () => {
    sys = await startSystem({ backend });
  });
  afterEach(async () => {
    await sys.close();
  });

  async function enrolled(n: number) {
    const r = rider(n);
    await openAccount(sys, r, 10_000n);
    const { card } = await enroll(sys, newCard(sys, `C${n}`), r);
    return { r, card };
  }

  async function fareEntries(accountId: string) {
    const res = await callUnary(sys.authorizerClient, sys.authorizerClient.listLedgerEntries, { accountId, pageSize: 500, pageToken: '' });
    return res.entries.filter((e) => e.kind === TransferKind.TRANSFER_KIND_FARE);
  }

  it('stores and debits a tap reported twice only once', async () => {
    const { r, card } = await enrolled(1);
    // A tap as terminal T9 would report it.
    const { proof } = zeroAmountDebit(card, { terminalId: 'T9', terminalSequence: 1n, terminalRandom: newTerminalRandom() });
    const t: Tap = {
      tapId: 'T9:1',
      terminalId: 'T9',
      terminalSequence: '1',
      cardId: card.cardId,
      agreementId: card.creditFlag!.agreementId,
      fare: money(FARE),
      tappedAt: new Date(),
      proof,
    };
    const first = await callUnary(sys.issuerClient, sys.issuerClient.tapReport, { terminalId: 'T9', taps: [t] });
    const second = await callUnary(sys.issuerClient, sys.issuerClient.tapReport, { terminalId: 'T9', taps: [t] });
    expect(first.results.map((x) => x.status)).to.deep.equal([TapReportStatus.TAP_REPORT_STATUS_STORED]);
    expect(second.results.map((x) => x.status)).to.deep.equal([TapReportStatus.TAP_REPORT_STATUS_DUPLICATE]);

    await waitFor(async () => {
      const res = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: card.cardId, pageSize: 0, pageToken: '' });
      return res.taps.length === 1 && res.taps[0].state === TapState.TAP_STATE_SETTLED;
    });
    const third = await callUnary(sys.issuerClient, sys.issuerClient.tapReport, { terminalId: 'T9', taps: [t] });
    expect(third.results[0].status).to.equal(TapReportStatus.TAP_REPORT_STATUS_DUPLICATE);
    expect(await fareEntries(r.accountId)).to.have.length(1);

    const conflicting = await callUnary(sys.issuerClient, sys.issuerClient.tapReport, {
      terminalId: 'T9',
      taps: [{ ...t, fare: money(FARE + 1n) }],
    });
    expect(conflicting.results[0].status).to.equal(TapReportStatus.TAP_REPORT_STATUS_TAP_ID_CONFLICT);
  });

  it('debits a repeated DeductRequest once and names a reused request id', async () => {
    const { r, card } = await enrolled(2);
    const item = { requestId: 'X9:1', agreementId: card.creditFlag!.agreementId, amount: money(150n), tappedAt: new Date() };
    const first = await callUnary(sys.authorizerClient, sys.authorizerClient.deduct, { issuerId: ISSUER_ID, items: [item] });
    const again = await callUnary(sys.authorizerClient, sys.authorizerClient.deduct, { issuerId: ISSUER_ID, items: [item] });
    expect(first.results[0].status).to.equal(DeductStatus.DEDUCT_STATUS_DEBITED);
    expect(again.results[0]).to.deep.equal(first.results[0]);

    const reused = await callUnary(sys.authorizerClient, sys.authorizerClient.deduct, {
      issuerId: ISSUER_ID,
      items: [{ ...item, amount: money(151n) }],
    });
    expect(reused.results[0].status).to.equal(DeductStatus.DEDUCT_STATUS_REJECTED);
    expect(reused.results[0].errorReason).to.equal('REQUEST_ID_REUSED');

    const account = await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId: r.accountId });
    expect(account.account!.balance!.minorUnits).to.equal(String(10_000n - 150n));
    expect(await fareEntries(r.accountId)).to.have.length(1);
    await sys.authorizer.checkLedger();
  });
});
