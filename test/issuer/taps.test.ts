import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { TapReportStatus, TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { getCard, listCardTaps } from '../../issuer/cards.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { reportTaps } from '../../issuer/taps.js';
import { enrollRequest, expectApiError, money, newCard, openTestIssuer, tableCounts, tapOf, tapsOf, type TestIssuer } from './fixtures.js';

const { TAP_REPORT_STATUS_STORED: STORED, TAP_REPORT_STATUS_DUPLICATE: DUPLICATE, TAP_REPORT_STATUS_REJECTED: REJECTED, TAP_REPORT_STATUS_TAP_ID_CONFLICT: CONFLICT } =
  TapReportStatus;

describe('issuer: TapReport', () => {
  let t: TestIssuer;
  let card: CardImage;
  let agreementId: string;
  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    card = enrolled.card;
  });
  afterEach(() => t.close());

  it('stores each tap RECEIVED with its history and records the highest card counter', async () => {
    const { taps } = tapsOf(card, agreementId, 'T1', 1, 3);
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps });
    expect(response.results).to.deep.equal(taps.map((tap) => ({ tapId: tap.tapId, status: STORED, reason: '' })));

    const { taps: held } = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 0, pageToken: '' });
    expect(held.map((h) => h.tap!.tapId)).to.deep.equal(['T1:3', 'T1:2', 'T1:1']);
    expect(held[2].tap).to.deep.equal(taps[0]); // as reported, proof included
    expect(held[2].state).to.equal(TapState.TAP_STATE_RECEIVED);
    expect(held[2].history.map((h) => h.state)).to.deep.equal([TapState.TAP_STATE_RECEIVED]);
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.lastCounter).to.equal('4'); // enrollment read 1, taps 2..4
  });

  it('acknowledges a resent tap as DUPLICATE and changes nothing', async () => {
    const { taps } = tapsOf(card, agreementId, 'T1', 1, 2);
    await reportTaps(t.ctx, { terminalId: 'T1', taps });
    const counts = await tableCounts(t.db);
    const more = tapOf(card, agreementId, 'T1', 3).tap;
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps: [...taps, more] });
    expect(response.results.map((r) => r.status)).to.deep.equal([DUPLICATE, DUPLICATE, STORED]);
    expect((await tableCounts(t.db)).taps).to.equal(counts.taps + 1);
  });

  it('reports TAP_ID_CONFLICT for a different tap under a stored tap id and keeps the first', async () => {
    const { tap } = tapOf(card, agreementId, 'T1', 1);
    await reportTaps(t.ctx, { terminalId: 'T1', taps: [tap] });
    const other = { ...tap, fare: money(999) };
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps: [other] });
    expect(response.results).to.deep.equal([{ tapId: 'T1:1', status: CONFLICT, reason: 'TAP_ID_CONFLICT' }]);
    const { taps: held } = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 0, pageToken: '' });
    expect(held[0].tap!.fare).to.deep.equal(money(200));
  });

  it('stores a tap whose MAC fails as REJECTED CARD_AUTHENTICATION_FAILED, without moving the counter', async () => {
    const forged = tapOf({ ...card, cardKey: randomBytes(16), counter: '1000' }, agreementId, 'T1', 1).tap;
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps: [forged] });
    expect(response.results).to.deep.equal([{ tapId: 'T1:1', status: REJECTED, reason: 'CARD_AUTHENTICATION_FAILED' }]);
    const { taps: held } = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 0, pageToken: '' });
    expect(held[0]).to.deep.include({ state: TapState.TAP_STATE_REJECTED, declineReason: 'CARD_AUTHENTICATION_FAILED' });
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.lastCounter).to.equal('1');
  });

  it('stores taps of an unenrolled card or an agreement not bound to the card as REJECTED CARD_NOT_ENROLLED', async () => {
    const stranger = tapOf(newCard(t.masterKey, 'C9'), agreementId, 'T1', 1).tap;
    const wrongAgreement = tapOf(card, 'agr-other', 'T1', 2).tap;
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps: [stranger, wrongAgreement] });
    expect(response.results.map((r) => [r.status, r.reason])).to.deep.equal([
      [REJECTED, 'CARD_NOT_ENROLLED'],
      [REJECTED, 'CARD_NOT_ENROLLED'],
    ]);
    // The unenrolled card's taps stay visible for audit.
    const { taps: held } = await listCardTaps(t.ctx, { cardId: 'C9', pageSize: 0, pageToken: '' });
    expect(held.map((h) => h.state)).to.deep.equal([TapState.TAP_STATE_REJECTED]);
  });

  it('rejects CARD_EXPIRED a tap taken after the expiry the issuer recorded, whatever the card told the gate', async () => {
    // The issuer's record says the card expired on 2030-06-30; the tap says it was taken the day after.
    await t.db('cards').where({ card_id: 'C1' }).update({ expires_on: '2030-06-30' });
    const late = tapOf(card, agreementId, 'T1', 1).tap;
    const onTheDay = tapOf(card, agreementId, 'T1', 2).tap;
    const response = await reportTaps(t.ctx, {
      terminalId: 'T1',
      taps: [
        { ...late, tappedAt: new Date('2030-07-01T00:00:01Z') },
        { ...onTheDay, tappedAt: new Date('2030-06-30T23:59:59Z') },
      ],
    });
    expect(response.results.map((r) => [r.status, r.reason])).to.deep.equal([
      [REJECTED, 'CARD_EXPIRED'],
      [STORED, ''],
    ]);
    const { taps: held } = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 0, pageToken: '' });
    expect(held.find((h) => h.tap!.tapId === 'T1:1')).to.deep.include({ state: TapState.TAP_STATE_REJECTED, declineReason: 'CARD_EXPIRED' });
  });

  it('refuses a batch with bad taps, naming each field, and stores none of it', async () => {
    const good = tapOf(card, agreementId, 'T1', 1).tap;
    const t2 = tapOf(card, agreementId, 'T1', 2).tap;
    const taps = [
      good,
      { ...t2, fare: money(0) },
      { ...t2, tapId: 'T1:3', terminalSequence: '3', proof: { ...t2.proof!, terminalSequence: '3' }, fare: money(200, 'USD') },
      { ...good },
      { ...t2, tapId: 'T1:5', terminalSequence: '5', proof: { ...t2.proof!, terminalSequence: '5', mac: Buffer.alloc(7) }, tappedAt: undefined },
      { ...t2, tapId: 'T2:6', terminalId: 'T2', terminalSequence: '6', proof: undefined },
      { ...t2, tapId: 'T1:7', terminalSequence: '7', proof: { ...t2.proof!, terminalSequence: '8', cardId: 'C2', counter: '18446744073709551615' } },
    ];
    const counts = await tableCounts(t.db);
    const err = await expectApiError(reportTaps(t.ctx, { terminalId: 'T1', taps }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.have.members([
      'taps[1].fare.minor_units',
      'taps[2].fare.currency_code',
      'taps[3].tap_id',
      'taps[4].proof.mac',
      'taps[4].tapped_at',
      'taps[5].terminal_id',
      'taps[5].proof',
      'taps[6].proof.card_id',
      'taps[6].proof.terminal_sequence',
      'taps[6].proof.counter',
    ]);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  it('refuses a tap id that is not <terminal_id>:<terminal_sequence>, an empty batch and a bad terminal id', async () => {
    const tap = tapOf(card, agreementId, 'T1', 1).tap;
    let err = await expectApiError(reportTaps(t.ctx, { terminalId: 'T1', taps: [{ ...tap, tapId: 'T1:2' }] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['taps[0].tap_id']);
    err = await expectApiError(reportTaps(t.ctx, { terminalId: 'T:1', taps: [] }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['terminal_id', 'taps']);
  });

  it('stores a batch of 5000 taps in one report', async function () {
    this.timeout(60_000);
    const { taps } = tapsOf(card, agreementId, 'T1', 1, 5000);
    const response = await reportTaps(t.ctx, { terminalId: 'T1', taps });
    expect(response.results.every((r) => r.status === STORED)).to.equal(true);
    expect((await tableCounts(t.db)).taps).to.equal(5000);
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.lastCounter).to.equal('5001');
  });

  it('commits concurrent reports together, each with its own results; a tap in two of them is stored once', async () => {
    const { taps } = tapsOf(card, agreementId, 'T1', 1, 20);
    let transactions = 0;
    t.db.on('query', (q: { sql: string }) => {
      if (/^BEGIN/i.test(q.sql)) transactions++;
    });
    // Twenty single-tap reports at once, as twenty gates would send them, and the first tap resent in a report of its own.
    const responses = await Promise.all([...taps.map((tap) => reportTaps(t.ctx, { terminalId: 'T1', taps: [tap] })), reportTaps(t.ctx, { terminalId: 'T1', taps: [taps[0]] })]);
    expect(responses.slice(0, 20).map((r) => r.results)).to.deep.equal(taps.map((tap) => [{ tapId: tap.tapId, status: STORED, reason: '' }]));
    expect(responses[20].results).to.deep.equal([{ tapId: 'T1:1', status: DUPLICATE, reason: '' }]);
    expect((await tableCounts(t.db)).taps).to.equal(20);
    expect((await getCard(t.ctx, { cardId: 'C1' })).card!.lastCounter).to.equal('21');
    expect(transactions, 'transactions for 21 reports').to.be.within(1, 5);
  });
});

describe('issuer: ListCardTaps', () => {
  let t: TestIssuer;
  beforeEach(async () => {
    t = await openTestIssuer();
    const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
    const agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
    await reportTaps(t.ctx, { terminalId: 'T1', taps: tapsOf(enrolled.card, agreementId, 'T1', 1, 7).taps });
  });
  afterEach(() => t.close());

  it('pages through taps newest first with an opaque token', async () => {
    const seen: string[] = [];
    let pageToken = '';
    do {
      const page = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 3, pageToken });
      seen.push(...page.taps.map((h) => h.tap!.tapId));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).to.deep.equal(['T1:7', 'T1:6', 'T1:5', 'T1:4', 'T1:3', 'T1:2', 'T1:1']);
  });

  it('refuses a token of another card, a negative page size and an unknown card', async () => {
    const { nextPageToken } = await listCardTaps(t.ctx, { cardId: 'C1', pageSize: 2, pageToken: '' });
    await expectApiError(listCardTaps(t.ctx, { cardId: 'C2', pageSize: 2, pageToken: nextPageToken }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    await expectApiError(listCardTaps(t.ctx, { cardId: 'C1', pageSize: 2, pageToken: 'garbage' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    await expectApiError(listCardTaps(t.ctx, { cardId: 'C1', pageSize: -1, pageToken: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    await expectApiError(listCardTaps(t.ctx, { cardId: 'C2', pageSize: 0, pageToken: '' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
    await expectApiError(getCard(t.ctx, { cardId: 'C2' }), status.NOT_FOUND, 'CARD_NOT_FOUND');
    await expectApiError(getCard(t.ctx, { cardId: '' }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  });
});
