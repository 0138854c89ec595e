// Unenrollment and lost cards in the domain: the agreement is revoked at the
// authorizer before anything changes here, then the binding ends and the card
// is listed, in one transaction.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { CardState, DenyListReason, TapReportStatus } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { reportCardLost, unenrollCard } from '../../issuer/card-lifecycle.js';
import { getCard } from '../../issuer/cards.js';
import { cardReasons } from '../../issuer/deny-list.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { reportTaps } from '../../issuer/taps.js';
import { authorizerDown, enrollRequest, expectApiError, newCard, openTestIssuer, tableCounts, tapOf, type TestIssuer } from './fixtures.js';

describe('issuer: unenrollment and lost cards', () => {
  let t: TestIssuer;
  let card: CardImage;
  let agreementId: string;
  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1', 'acc-1');
    agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    card = enrolled.card;
  });
  afterEach(() => t.close());

  it('unenrolls: revokes the agreement, ends the binding, lists the card REVOKED; a repeat changes nothing', async () => {
    const { card: after } = await unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-1' });
    expect(t.authorizer.revokeCalls).to.deep.equal([{ issuerId: 'issuer-1', agreementId }]);
    expect([after!.state, after!.enrollment, after!.denyListReasons]).to.deep.equal([
      CardState.CARD_STATE_UNENROLLED,
      undefined,
      [DenyListReason.DENY_LIST_REASON_REVOKED],
    ]);
    const counts = await tableCounts(t.db);
    expect((await unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-1' })).card).to.deep.equal(after);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
    expect(t.authorizer.revokeCalls).to.have.length(1);
  });

  it('still takes a ride the card took before it was unenrolled', async () => {
    const { tap } = tapOf(card, agreementId, 'T1', 1);
    await unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-1' });
    const { results } = await reportTaps(t.ctx, { terminalId: 'T1', taps: [tap] });
    expect(results[0].status).to.equal(TapReportStatus.TAP_REPORT_STATUS_STORED);
  });

  it('enrolls an unenrolled card again and unlists it', async () => {
    await unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-1' });
    const again = enrollRequest(card, 'req-2', 'acc-1');
    await enrollCard(t.ctx, again.request);
    const { card: held } = await getCard(t.ctx, { cardId: 'C1' });
    expect([held!.state, held!.denyListReasons]).to.deep.equal([CardState.CARD_STATE_ENROLLED, []]);
    expect(held!.enrollment!.agreementId).to.not.equal(agreementId);
  });

  it('changes nothing when the account does not match or the authorizer cannot be reached', async () => {
    const counts = await tableCounts(t.db);
    await expectApiError(unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-2' }), status.PERMISSION_DENIED, 'ACCOUNT_MISMATCH');
    t.authorizer.failWith = authorizerDown();
    await expectApiError(reportCardLost(t.ctx, { cardId: 'C1', accountId: 'acc-1' }), status.UNAVAILABLE, 'AUTHORIZER_UNAVAILABLE');
    expect(await tableCounts(t.db)).to.deep.equal(counts);
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.state).to.equal(CardState.CARD_STATE_ENROLLED);
    await expectApiError(unenrollCard(t.ctx, { cardId: 'C9', accountId: 'acc-1' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
    await expectApiError(unenrollCard(t.ctx, { cardId: '', accountId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  });

  it('lists a lost card LOST for good: no unenrollment or enrollment of it afterwards', async () => {
    const { card: lost } = await reportCardLost(t.ctx, { cardId: 'C1', accountId: 'acc-1' });
    expect([lost!.state, lost!.denyListReasons]).to.deep.equal([CardState.CARD_STATE_LOST, [DenyListReason.DENY_LIST_REASON_LOST]]);
    expect((await reportCardLost(t.ctx, { cardId: 'C1', accountId: 'acc-1' })).card).to.deep.equal(lost);
    await expectApiError(unenrollCard(t.ctx, { cardId: 'C1', accountId: 'acc-1' }), status.FAILED_PRECONDITION, 'CARD_LOST');
    await expectApiError(enrollCard(t.ctx, enrollRequest(card, 'req-3', 'acc-1').request), status.FAILED_PRECONDITION, 'CARD_LOST');
    expect(await cardReasons(t.db, 'C1')).to.deep.equal(['LOST']);
  });
});
