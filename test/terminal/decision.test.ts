import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { issueCard, signCreditFlag, verifyCardProof, writeCreditFlag } from '../../common/card.js';
import { CardEmulator } from '../../common/card-emulator.js';
import type { CardAnswer, CardImage, CardProof } from '../../gen/tapcredit/type/v1/card.js';
import { DeclineReason } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { repeatOf, TapSession, utcDay, type ReaderContext } from '../../terminal/decision.js';

type DecisionInput = { card: CardImage; today: string } & ReaderContext;
type DecisionOutcome =
  | { decision: 'ACCEPT'; card: CardImage; proof: CardProof; agreementId: string; answersRead: number }
  | { decision: 'DECLINE'; reason: DeclineReason; card: CardImage; answersRead: number };

/** Runs a tap session against a card emulator, with no network: the gate's decision and the card as it left the field. */
function decide(input: DecisionInput): DecisionOutcome {
  const card = new CardEmulator(input.card);
  const session = new TapSession(input);
  // The card answers each command as it comes; the terminal reads the answers one at a time.
  const answers: CardAnswer[] = [];
  let answersRead = 0;
  let step = session.start(0);
  while (step.kind === 'command') {
    for (const command of step.commands) answers.push(card.answer(command));
    answersRead++;
    step = session.answer(answers.shift(), 0, input.today);
  }
  if (step.kind === 'decline') return { decision: 'DECLINE', reason: step.reason, card: card.card, answersRead };
  return { decision: 'ACCEPT', card: card.card, proof: step.proof, agreementId: step.agreementId, answersRead };
}

describe('terminal offline decision', () => {
  const masterKey = randomBytes(32);
  const issuer = generateKeyPairSync('ed25519');
  const forger = generateKeyPairSync('ed25519');
  const today = '2026-03-15';

  const flagFor = (cardId: string, signer = issuer.privateKey) =>
    signCreditFlag(signer, { cardId, agreementId: `agr_${cardId}`, version: 1, issuedAt: new Date('2026-01-01T00:00:00Z') });
  const enrolledCard = (cardId = 'C1', expiresOn = '2030-12-31'): CardImage =>
    writeCreditFlag(issueCard(masterKey, { cardId, issuerCode: 'CITY1', expiresOn }), flagFor(cardId));

  const input = (card: CardImage, over: Partial<DecisionInput> = {}): DecisionInput => ({
    card,
    terminalId: 'T1',
    issuerCode: 'CITY1',
    masterKey,
    issuerPublicKey: issuer.publicKey,
    isDenyListed: () => false,
    today,
    reserveSequence: () => 42n,
    newRandom: () => randomBytes(8),
    ...over,
  });

  const expectDecline = (inp: DecisionInput, reason: DeclineReason) => {
    const outcome = decide(inp);
    expect(outcome.decision).to.equal('DECLINE');
    if (outcome.decision === 'DECLINE') expect(outcome.reason).to.equal(reason);
    return outcome;
  };

  it('accepts an enrolled, genuine, valid card: the proof verifies and the counter advances', () => {
    const card = enrolledCard();
    const outcome = decide(input(card));
    expect(outcome.decision).to.equal('ACCEPT');
    if (outcome.decision !== 'ACCEPT') return;
    expect(outcome.agreementId).to.equal('agr_C1');
    expect(outcome.card.counter).to.equal('1');
    expect(outcome.proof).to.include({ cardId: 'C1', counter: '1', terminalId: 'T1', terminalSequence: '42' });
    expect(verifyCardProof(masterKey, outcome.proof)).to.equal(true);
  });

  it('accepts a card on its expiry day', () => {
    expect(decide(input(enrolledCard('C1', today))).decision).to.equal('ACCEPT');
  });

  it('declines a card of another issuer with WRONG_ISSUER', () => {
    expectDecline(input({ ...enrolledCard(), issuerCode: 'CITY2' }), DeclineReason.DECLINE_REASON_WRONG_ISSUER);
  });

  it('declines a card without a credit flag with NO_CREDIT_FLAG (the card answered the debit sent with READ: its counter moved)', () => {
    const card = issueCard(masterKey, { cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31' });
    const outcome = expectDecline(input(card), DeclineReason.DECLINE_REASON_NO_CREDIT_FLAG);
    expect(outcome.card.counter).to.equal('1');
  });

  it('declines a flag signed by anyone but the issuer with FLAG_SIGNATURE_INVALID', () => {
    const card = writeCreditFlag(enrolledCard(), flagFor('C1', forger.privateKey));
    expectDecline(input(card), DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
  });

  it('declines a flag whose fields were altered after signing with FLAG_SIGNATURE_INVALID', () => {
    const card = enrolledCard();
    expectDecline(input({ ...card, creditFlag: { ...card.creditFlag!, agreementId: 'agr_other' } }), DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
  });

  it('declines a genuine flag copied from another card with FLAG_CARD_MISMATCH', () => {
    const card = writeCreditFlag(enrolledCard('C1'), flagFor('C2'));
    expectDecline(input(card), DeclineReason.DECLINE_REASON_FLAG_CARD_MISMATCH);
  });

  it('declines a card past its expiry day with CARD_EXPIRED', () => {
    expectDecline(input(enrolledCard('C1', '2026-03-14')), DeclineReason.DECLINE_REASON_CARD_EXPIRED);
  });

  it('declines a card on the deny list with DENY_LISTED, on its READ answer', () => {
    const outcome = expectDecline(input(enrolledCard(), { isDenyListed: (id) => id === 'C1' }), DeclineReason.DECLINE_REASON_DENY_LISTED);
    expect(outcome.answersRead).to.equal(1);
  });

  it('declines a card whose key is not the genuine one with CARD_AUTHENTICATION_FAILED, counter advanced', () => {
    const copy = { ...enrolledCard(), cardKey: randomBytes(16) };
    const outcome = expectDecline(input(copy), DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
    expect(outcome.card.counter).to.equal('1');
  });

  it('declines a card personalized under another master key with CARD_AUTHENTICATION_FAILED', () => {
    const card = writeCreditFlag(issueCard(randomBytes(32), { cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31' }), flagFor('C1'));
    expectDecline(input(card), DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
  });

  it('checks in gate order: wrong issuer before missing flag, signature before card match, expiry before deny list', () => {
    const unflagged = issueCard(masterKey, { cardId: 'C1', issuerCode: 'CITY2', expiresOn: '2020-01-01' });
    expectDecline(input(unflagged), DeclineReason.DECLINE_REASON_WRONG_ISSUER);
    const forgedCopy = writeCreditFlag(enrolledCard('C1'), flagFor('C2', forger.privateKey));
    expectDecline(input(forgedCopy), DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
    expectDecline(input(enrolledCard('C1', '2020-01-01'), { isDenyListed: () => true }), DeclineReason.DECLINE_REASON_CARD_EXPIRED);
    expectDecline(input({ ...enrolledCard(), cardKey: randomBytes(16) }, { isDenyListed: () => true }), DeclineReason.DECLINE_REASON_DENY_LISTED);
  });

  it('sends READ and the zero-amount DEBIT together, the challenge fresh each time; a card failing a check is declined on its READ answer', () => {
    const session = new TapSession(input(enrolledCard(), { reserveSequence: () => 7n }));
    const first = session.start(0);
    expect(first.kind).to.equal('command');
    if (first.kind !== 'command') return;
    expect(first.commands.map((c) => (c.read ? 'READ' : 'DEBIT'))).to.deep.equal(['READ', 'DEBIT']);
    expect(first.commands[1].debit).to.deep.include({ amount: '0', terminalId: 'T1', terminalSequence: '7' });
    const other = new TapSession(input(enrolledCard())).start(0);
    expect(Buffer.from(other.kind === 'command' ? other.commands[1].debit!.terminalRandom : []).equals(Buffer.from(first.commands[1].debit!.terminalRandom))).to.equal(false);
    expect(expectDecline(input(enrolledCard(), { isDenyListed: () => true }), DeclineReason.DECLINE_REASON_DENY_LISTED).answersRead).to.equal(1);
    expect(decide(input(enrolledCard())).answersRead).to.equal(2);
  });

  it('declines an answer that comes after the time limit, measured from sending the challenge', () => {
    const session = new TapSession(input(enrolledCard(), { answerTimeoutMs: 1000 }));
    const card = new CardEmulator(enrolledCard());
    const sent = session.start(5_000);
    const answers = sent.kind === 'command' ? sent.commands.map((c) => card.answer(c)) : [];
    const wait = session.answer(answers[0], 5_400, today);
    expect(wait).to.deep.include({ kind: 'command', commands: [], timeoutMs: 600 });
    const late = session.answer(answers[1], 6_001, today);
    expect(late).to.deep.include({ kind: 'decline', reason: DeclineReason.DECLINE_REASON_ANSWER_TIMEOUT, cardId: 'C1' });
  });

  it('takes the service day in UTC', () => {
    expect(utcDay(new Date('2026-03-15T23:30:00-05:00'))).to.equal('2026-03-16');
  });

  describe('a repeated presentation (repeatOf)', () => {
    const now = 1_770_000_000_000;
    const last = { tapId: 'T1:7', counter: 12n, tappedAt: now - 10_000 };
    const record = (tapId: string, counter: bigint) => ({ tapId, counter: counter.toString() });

    it('repeats the last tap here when the card record stops below it, within the window', () => {
      expect(repeatOf(last, record('T2:3', 11n), now, 60_000)).to.equal('T1:7');
      expect(repeatOf(last, undefined, now, 60_000), 'a card that holds no record').to.equal('T1:7');
      expect(repeatOf(last, record('T2:3', 11n), now - 10_000 + 60_000, 60_000), 'at the edge of the window').to.equal('T1:7');
    });

    it('is a new ride when the record shows the tap (or a later one) completed, outside the window, after a repeat, or with no tap here', () => {
      expect(repeatOf(last, record('T1:7', 12n), now, 60_000)).to.equal(undefined);
      expect(repeatOf(last, record('T3:1', 13n), now, 60_000)).to.equal(undefined);
      expect(repeatOf(last, record('T2:3', 11n), now - 10_000 + 60_001, 60_000)).to.equal(undefined);
      expect(repeatOf({ ...last, repeatOf: 'T1:6' }, record('T2:3', 11n), now, 60_000), 'one repeat per tap').to.equal(undefined);
      expect(repeatOf(undefined, undefined, now, 60_000)).to.equal(undefined);
    });
  });

  it('refuses a READ answer whose record claims a counter the card has not reached', () => {
    const session = new TapSession(input(enrolledCard()));
    session.start(0);
    const card = new CardEmulator(enrolledCard());
    const read = card.answer({ read: {}, debit: undefined, complete: undefined });
    read.read!.lastCompleted = { tapId: 'T1:1', counter: String(BigInt(read.read!.counter) + 1n) };
    expect(() => session.answer(read, 1, '2026-01-01')).to.throw(/last_completed/);
  });
});
