import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { credentials, status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { computeCardMac, signCreditFlag, writeCreditFlag } from '../../common/card.js';
import { CardEmulator } from '../../common/card-emulator.js';
import { presentCard, presentCardImage, type CardSide } from '../../common/present-card.js';
import { decodeErrorDetails, invalidArgument, toServiceError } from '../../common/errors.js';
import { callUnary } from '../../common/rpc.js';
import { TapReportStatus } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, DeclineReason, TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { CardStatus, type CardAnswer, type CardCommand, type CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { PresentCardRequest } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import { refusedTaps } from '../../terminal/forwarder.js';
import type { TerminalHandle } from '../../terminal/service.js';
import {
  blankCard,
  enrolledCard,
  expectGrpcError,
  FakeIssuer,
  removeDir,
  sleep,
  startTestTerminal,
  tempDir,
  waitFor,
} from './fixtures.js';

describe('terminal server', () => {
  let dir: string;
  let issuer: FakeIssuer;
  let terminal: TerminalHandle | undefined;
  let client: TerminalServiceClient | undefined;

  async function start(over: Parameters<typeof startTestTerminal>[2] = {}) {
    terminal = await startTestTerminal(dir, issuer.address, over);
    client = new TerminalServiceClient(terminal.address, credentials.createInsecure());
  }
  async function stop() {
    client?.close();
    await terminal?.close();
    client = undefined;
    terminal = undefined;
  }
  const present = (card: CardImage) => presentCardImage(client!, card);
  /** A card that answers through the given function, recording every command and answer. */
  const scripted = (answer: (command: CardCommand, card: CardEmulator) => CardAnswer | Promise<CardAnswer>, image: CardImage) => {
    const card = new CardEmulator(image);
    const log: { command: CardCommand; answer: CardAnswer }[] = [];
    const side: CardSide = {
      answer: async (command) => {
        const a = await answer(command!, card);
        log.push({ command: command!, answer: a });
        return a;
      },
    };
    return { card, log, side };
  };
  const terminalStatus = (unsentTapsLimit = 0) => callUnary(client!, client!.getTerminalStatus, { unsentTapsLimit });
  const storedTaps = async () => (await terminal!.db('taps').orderBy('sequence').select('tap')).map((r: { tap: Buffer }) => Tap.decode(r.tap));

  beforeEach(async () => {
    dir = tempDir();
    issuer = await new FakeIssuer().start();
  });
  afterEach(async () => {
    await stop();
    issuer.stop();
    removeDir(dir);
  });

  it('accepts an enrolled card: the tap is stored before the answer and then forwarded to the issuer', async () => {
    await start();
    const card = enrolledCard('C1');
    const response = await present(card);

    expect(response.decision).to.equal(Decision.DECISION_ACCEPT);
    expect(response.declineReason).to.equal(DeclineReason.DECLINE_REASON_UNSPECIFIED);
    expect(response.tap).to.deep.include({ tapId: 'T1:1', terminalId: 'T1', terminalSequence: '1', cardId: 'C1', agreementId: 'agr_C1' });
    expect(response.tap!.fare).to.deep.equal({ currencyCode: 'CNY', minorUnits: '200' });
    expect(response.card!.counter).to.equal('1');
    expect(response.card!.creditFlag).to.deep.equal(card.creditFlag);
    // Already in the store when the gate opened.
    expect(await storedTaps()).to.deep.equal([response.tap]);

    await waitFor(() => issuer.stored.has('T1:1'));
    expect(issuer.stored.get('T1:1')).to.deep.equal(response.tap);
    expect(issuer.reports[0].terminalId).to.equal('T1');
    await waitFor(async () => (await terminalStatus()).unsentTapCount === '0');
  });

  it('declines each bad card with its own reason and neither stores nor forwards it', async () => {
    await start();
    const other = generateKeyPairSync('ed25519');
    const forged = writeCreditFlag(blankCard('C2'), signCreditFlag(other.privateKey, { cardId: 'C2', agreementId: 'agr_x', version: 1, issuedAt: new Date() }));
    await terminal!.store.denyCard('C6', 'LOST');
    const cases: [CardImage, DeclineReason][] = [
      [blankCard('C1'), DeclineReason.DECLINE_REASON_NO_CREDIT_FLAG],
      [forged, DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID],
      [{ ...enrolledCard('C3'), creditFlag: enrolledCard('C9').creditFlag }, DeclineReason.DECLINE_REASON_FLAG_CARD_MISMATCH],
      [enrolledCard('C4', '2020-01-01'), DeclineReason.DECLINE_REASON_CARD_EXPIRED],
      [{ ...enrolledCard('C5'), cardKey: randomBytes(16) }, DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED],
      [enrolledCard('C6'), DeclineReason.DECLINE_REASON_DENY_LISTED],
      [{ ...enrolledCard('C7'), issuerCode: 'CITY2' }, DeclineReason.DECLINE_REASON_WRONG_ISSUER],
    ];
    for (const [card, reason] of cases) {
      const response = await present(card);
      expect(response.decision, card.cardId).to.equal(Decision.DECISION_DECLINE);
      expect(response.declineReason, card.cardId).to.equal(reason);
      expect(response.tap).to.equal(undefined);
    }
    // The fake card answered the zero-amount debit, so its counter moved.
    expect((await present({ ...enrolledCard('C5'), cardKey: randomBytes(16) })).card!.counter).to.equal('1');

    // A genuine tap afterwards is the only one stored and sent. Every card
    // presented was sent a debit with its own sequence (1 to 8), so the tap takes 9.
    const accepted = await present(enrolledCard('C8'));
    expect(accepted.tap!.tapId).to.equal('T1:9');
    await waitFor(() => issuer.stored.has('T1:9'));
    await sleep(100);
    expect(issuer.sentTapIds()).to.deep.equal(['T1:9']);
    expect((await storedTaps()).map((t) => t.tapId)).to.deep.equal(['T1:9']);
  });

  it('retries while the issuer is unavailable and stops sending once the taps are acknowledged', async () => {
    issuer.unavailableCalls = 3;
    await start();
    await present(enrolledCard('C1'));
    await present(enrolledCard('C2'));

    await waitFor(() => issuer.stored.size === 2);
    expect(issuer.reports.length).to.be.greaterThanOrEqual(4);
    const reported = await waitFor(async () => {
      const s = await terminalStatus();
      return s.unsentTapCount === '0' && s;
    });
    expect(reported.lastForwardedAt).to.be.instanceOf(Date);

    const reportsWhenAcked = issuer.reports.length;
    await sleep(150);
    expect(issuer.reports.length).to.equal(reportsWhenAcked);
    expect(new Set(issuer.sentTapIds())).to.deep.equal(new Set(['T1:1', 'T1:2']));
  });

  it('holds a tap the issuer answers TAP_ID_CONFLICT for, unsent and no longer sent, and acknowledges the others', async () => {
    issuer.overrides.set('T1:1', TapReportStatus.TAP_REPORT_STATUS_TAP_ID_CONFLICT);
    issuer.overrides.set('T1:2', TapReportStatus.TAP_REPORT_STATUS_REJECTED);
    await start();
    for (const id of ['C1', 'C2', 'C3']) await present(enrolledCard(id));
    await waitFor(() => issuer.stored.has('T1:3'));
    const reported = await waitFor(async () => {
      const s = await terminalStatus();
      return s.heldTapCount === '1' && s;
    });
    expect(reported).to.deep.include({ unsentTapCount: '1', heldTapCount: '1', heldTapIds: ['T1:1'] });
    expect(reported.unsentTaps.map((t) => t.tapId)).to.deep.equal(['T1:1']);
    // Held, it is not sent again with the next taps.
    const sends = () => issuer.reports.flatMap((r) => r.taps.map((t) => t.tapId)).filter((id) => id === 'T1:1').length;
    const sentBefore = sends();
    await present(enrolledCard('C4'));
    await waitFor(() => issuer.stored.has('T1:4'));
    expect(sends()).to.equal(sentBefore);
  });

  it('goes on forwarding when a whole batch of the oldest taps is held', async () => {
    for (const id of ['T1:1', 'T1:2', 'T1:3']) issuer.overrides.set(id, TapReportStatus.TAP_REPORT_STATUS_TAP_ID_CONFLICT);
    await start({ forwardBatchSize: 3 });
    for (let i = 1; i <= 6; i++) await present(enrolledCard(`C${i}`));
    await waitFor(() => ['T1:4', 'T1:5', 'T1:6'].every((id) => issuer.stored.has(id)));
    const reported = await waitFor(async () => {
      const s = await terminalStatus();
      return s.unsentTapCount === '3' && s;
    });
    expect(reported).to.deep.include({ heldTapCount: '3', heldTapIds: ['T1:1', 'T1:2', 'T1:3'] });
  });

  it('holds the taps the issuer refuses as malformed in a batch it would otherwise take, and sends the rest', async () => {
    issuer.malformed.add('T1:2');
    await start({ forwardBatchSize: 10 });
    issuer.unavailableCalls = Number.POSITIVE_INFINITY; // let the three taps queue into one batch
    for (const id of ['C1', 'C2', 'C3']) await present(enrolledCard(id));
    issuer.unavailableCalls = 0;
    await waitFor(() => issuer.stored.has('T1:1') && issuer.stored.has('T1:3'));
    const reported = await waitFor(async () => {
      const s = await terminalStatus();
      return s.heldTapCount === '1' && s;
    });
    expect(reported).to.deep.include({ unsentTapCount: '1', heldTapIds: ['T1:2'] });
    expect(issuer.stored.has('T1:2')).to.equal(false);
  });

  it('keeps retrying a batch the issuer refuses whole: every tap named, or the request itself', async () => {
    issuer.malformed.add('T1:1');
    await start();
    await present(enrolledCard('C1'));
    await waitFor(() => issuer.reports.length >= 3);
    const status = await terminalStatus();
    expect(status).to.deep.include({ unsentTapCount: '1', heldTapCount: '0' });
    // Once the issuer takes it (its configuration fixed, say), the tap goes.
    issuer.malformed.clear();
    await waitFor(() => issuer.stored.has('T1:1'));
  });

  it('keeps accepted taps across a restart, forwards them after it, and continues the sequence', async () => {
    issuer.unavailableCalls = Number.POSITIVE_INFINITY;
    await start({ forwardBatchSize: 2 });
    for (const id of ['C1', 'C2', 'C3']) await present(enrolledCard(id));
    expect((await terminalStatus()).unsentTapCount).to.equal('3');
    await stop();

    issuer.unavailableCalls = 0;
    await start({ forwardBatchSize: 2 });
    await waitFor(() => issuer.stored.size === 3);
    expect([...issuer.stored.keys()]).to.deep.equal(['T1:1', 'T1:2', 'T1:3']);
    expect(Math.max(...issuer.reports.map((r) => r.taps.length))).to.equal(2);

    const next = await present(enrolledCard('C4'));
    expect(next.tap!.tapId).to.equal('T1:4');
    await waitFor(() => issuer.stored.has('T1:4'));
    const reported = await terminalStatus();
    expect(reported).to.deep.include({ acceptedTapCount: '4', unsentTapCount: '0' });
  });

  it('gives concurrent taps distinct, consecutive sequences', async () => {
    issuer.unavailableCalls = Number.POSITIVE_INFINITY;
    await start();
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => present(enrolledCard(`C${i}`))));
    const sequences = responses.map((r) => Number(r.tap!.terminalSequence)).sort((a, b) => a - b);
    expect(sequences).to.deep.equal(Array.from({ length: 20 }, (_, i) => i + 1));
    expect((await storedTaps()).length).to.equal(20);
  });

  it('refuses a malformed card answer with INVALID_ARGUMENT naming every bad field, and stores nothing', async () => {
    await start();
    const noAnswer: CardSide = { answer: () => ({ status: CardStatus.CARD_STATUS_UNSPECIFIED, read: undefined, debit: undefined }) };
    await expectGrpcError(presentCard(client!, noAnswer), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    const bad: CardImage = { cardId: '', issuerCode: '', expiresOn: 'soon', counter: '0', cardKey: Buffer.alloc(16), creditFlag: undefined };
    const error = await expectGrpcError(present(bad), status.INVALID_ARGUMENT);
    expect(decodeErrorDetails(error).badRequest!.fieldViolations.map((v) => v.field)).to.have.members([
      'answer.read.card_id',
      'answer.read.issuer_code',
      'answer.read.expires_on',
    ]);
    // A debit answer to the READ command is no answer to it.
    const wrong = scripted((_c, card) => card.answer({ read: undefined, debit: { amount: '0', terminalId: 'T1', terminalSequence: '1', terminalRandom: randomBytes(8) } }), enrolledCard('C1'));
    const misplaced = await expectGrpcError(presentCard(client!, wrong.side), status.INVALID_ARGUMENT);
    expect(decodeErrorDetails(misplaced).badRequest!.fieldViolations.map((v) => v.field)).to.deep.equal(['answer.read']);
    expect((await storedTaps()).length).to.equal(0);
    await sleep(60);
    expect(issuer.reports.length).to.equal(0);
  });

  describe('challenge and response: the card keeps its key', () => {
    it('sends READ, then a zero-amount debit with its id, the tap sequence and a fresh random; no message to it carries a key', async () => {
      await start();
      const image = enrolledCard('C1');
      const first = scripted((command, card) => card.answer(command), image);
      const accepted = await presentCard(client!, first.side);
      expect(accepted.decision).to.equal(Decision.DECISION_ACCEPT);
      // READ and DEBIT from the terminal; COMPLETE from the reader once it has the ACCEPT, naming the tap.
      expect(first.log.map((l) => (l.command.read ? 'READ' : l.command.debit ? 'DEBIT' : l.command.complete ? 'COMPLETE' : '?'))).to.deep.equal(['READ', 'DEBIT', 'COMPLETE']);
      expect(first.log[2].command.complete).to.deep.equal({ tapId: accepted.tap!.tapId, counter: accepted.tap!.proof!.counter });
      const debit = first.log[1].command.debit!;
      expect(debit).to.deep.include({ amount: '0', terminalId: 'T1', terminalSequence: '1' });
      expect(debit.terminalRandom.length).to.equal(8);
      expect(accepted.tap!.proof).to.deep.include({ counter: '1', terminalSequence: '1', mac: Buffer.from(first.log[1].answer.debit!.mac) });

      const second = scripted((command, card) => card.answer(command), first.card.card);
      await presentCard(client!, second.side);
      expect(Buffer.from(second.log[1].command.debit!.terminalRandom).equals(Buffer.from(debit.terminalRandom))).to.equal(false);
      // Everything the card sent, as it went on the wire: the key's bytes are in none of it.
      for (const { answer } of [...first.log, ...second.log]) {
        const wire = Buffer.from(PresentCardRequest.encode({ answer }).finish());
        expect(wire.includes(image.cardKey)).to.equal(false);
      }
    });

    it('declines a replayed answer: the debit answer of an earlier tap fails the new challenge', async () => {
      await start();
      const recorded = scripted((command, card) => card.answer(command), enrolledCard('C1'));
      expect((await presentCard(client!, recorded.side)).decision).to.equal(Decision.DECISION_ACCEPT);
      const oldDebit = recorded.log[1].answer;
      // A copy of the card's data without its key, replaying what the card once answered.
      const replay = scripted((command, card) => (command.debit ? oldDebit : card.answer(command)), recorded.card.card);
      const outcome = await presentCard(client!, replay.side);
      expect(outcome).to.deep.include({ decision: Decision.DECISION_DECLINE, declineReason: DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED });
      expect((await storedTaps()).map((t) => t.tapId)).to.deep.equal(['T1:1']);
    });

    it("declines an answer computed for another terminal's challenge", async () => {
      await start();
      const relayed = scripted((command, card) => {
        if (!command.debit) return card.answer(command);
        // The card answered T2's challenge (same sequence and random, another reader): a relay.
        const answer = card.answer({ read: undefined, debit: { ...command.debit, terminalId: 'T2' } });
        return answer;
      }, enrolledCard('C1'));
      expect(await presentCard(client!, relayed.side)).to.deep.include({
        decision: Decision.DECISION_DECLINE,
        declineReason: DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED,
      });
      // And a MAC right in every byte but the counter the card claims.
      const lying = scripted((command, card) => {
        const answer = card.answer(command);
        if (!command.debit) return answer;
        const mac = computeCardMac(card.card.cardKey, { ...command.debit, cardId: 'C1', counter: 5n });
        return { ...answer, debit: { counter: '6', mac } };
      }, enrolledCard('C1'));
      expect((await presentCard(client!, lying.side)).declineReason).to.equal(DeclineReason.DECLINE_REASON_CARD_AUTHENTICATION_FAILED);
      expect((await storedTaps()).length).to.equal(0);
    });

    it('declines a stale challenge: an answer that comes after the time limit, with ANSWER_TIMEOUT', async () => {
      await start({ answerTimeoutMs: 150 });
      const slow = scripted(async (command, card) => {
        if (command.debit) await sleep(400);
        return card.answer(command);
      }, enrolledCard('C1'));
      expect(await presentCard(client!, slow.side)).to.deep.include({
        decision: Decision.DECISION_DECLINE,
        declineReason: DeclineReason.DECLINE_REASON_ANSWER_TIMEOUT,
      });
      // A card that never answers READ is declined the same way, once the limit passes.
      const mute: CardSide = { answer: () => new Promise<CardAnswer>(() => {}) };
      expect((await presentCard(client!, mute)).declineReason).to.equal(DeclineReason.DECLINE_REASON_ANSWER_TIMEOUT);
      expect((await storedTaps()).length).to.equal(0);
      // In time, the same card is taken.
      expect((await present(slow.card.card)).decision).to.equal(Decision.DECISION_ACCEPT);
    });

    it('ends with ABORTED CARD_SESSION_ENDED when the card closes its side before the outcome, and stores nothing', async () => {
      await start();
      const call = client!.presentCard();
      const ended = new Promise<unknown>((resolve) => call.on('error', resolve));
      call.on('data', () => call.end());
      const error = (await ended) as Parameters<typeof decodeErrorDetails>[0];
      expect(error.code).to.equal(status.ABORTED);
      expect(decodeErrorDetails(error).errorInfo?.reason).to.equal('CARD_SESSION_ENDED');
      expect((await storedTaps()).length).to.equal(0);
    });
  });

  it('reports its status: fare, counts, oldest unsent taps up to the limit, deny list', async () => {
    issuer.unavailableCalls = Number.POSITIVE_INFINITY;
    await start();
    for (const id of ['C1', 'C2', 'C3']) await present(enrolledCard(id));
    await terminal!.store.denyCard('C9', 'DEBT');

    const reported = await terminalStatus(2);
    expect(reported).to.deep.include({
      terminalId: 'T1',
      acceptedTapCount: '3',
      unsentTapCount: '3',
      lastForwardedAt: undefined,
      denyListVersion: '1',
      denyListSize: '1',
    });
    expect(reported.fare).to.deep.equal({ currencyCode: 'CNY', minorUnits: '200' });
    expect(reported.unsentTaps.map((t) => t.tapId)).to.deep.equal(['T1:1', 'T1:2']);
    expect((await terminalStatus(0)).unsentTaps.length).to.equal(3);

    const error = await expectGrpcError(terminalStatus(-1), status.INVALID_ARGUMENT);
    expect(decodeErrorDetails(error).badRequest!.fieldViolations[0].field).to.equal('unsent_taps_limit');
  });

  it('refuses to start with a terminal id containing ":"', async () => {
    let error: Error | undefined;
    await startTestTerminal(dir, issuer.address, { terminalId: 'T:1' }).catch((err) => (error = err));
    expect(error?.message).to.match(/terminalId must not contain ':'/);
  });

  it('verifies flags against the configured issuer key only', async () => {
    await start({ issuerPublicKey: generateKeyPairSync('ed25519').publicKey });
    expect((await present(enrolledCard('C1'))).declineReason).to.equal(DeclineReason.DECLINE_REASON_FLAG_SIGNATURE_INVALID);
  });
});

describe('terminal forwarder: which taps an INVALID_ARGUMENT refuses', () => {
  const taps = ['T1:1', 'T1:2', 'T1:3'].map((tapId) => Tap.fromPartial({ tapId }));
  const refusal = (fields: string[], count?: number) => {
    const violations = fields.map((field) => ({ field, description: 'bad' }));
    const err = toServiceError(invalidArgument(count === undefined ? violations : [...violations, ...Array.from({ length: count - fields.length }, () => violations[0])]), 'issuer.tapcredit');
    return Object.assign(new Error(String(err.details)), err);
  };
  const ids = (err: unknown) => refusedTaps(err, taps).map((t) => t.tapId);

  it('names the taps its field violations point at, when they are some of the batch', () => {
    expect(ids(refusal(['taps[0].fare.currency_code', 'taps[2].line_id']))).to.deep.equal(['T1:1', 'T1:3']);
  });

  it('names none when every tap is refused, the request itself is, the list was cut short, or the error is another', () => {
    expect(ids(refusal(['taps[0].fare', 'taps[1].fare', 'taps[2].fare']))).to.deep.equal([]);
    expect(ids(refusal(['taps[0].fare', 'terminal_id']))).to.deep.equal([]);
    expect(ids(refusal(['taps[0].fare'], 60))).to.deep.equal([]);
    expect(ids(Object.assign(new Error('down'), { code: status.UNAVAILABLE }))).to.deep.equal([]);
  });
});
