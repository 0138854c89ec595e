// Risk control end to end over real servers: the deny list reaching every
// terminal, debt recovery, unenrollment and lost cards, clone detection,
// fare capping and the rider's trip history.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { callUnary } from '../../common/rpc.js';
import { CardState, DenyListReason, TapState, type IssuerTap } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, DeclineReason } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { enroll, openAccount, rider, tap, type RiderDetails } from '../helpers/rider.js';
import { CURRENCY, FARE, expectGrpcError, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

const { DENY_LIST_REASON_DEBT: DEBT, DENY_LIST_REASON_LOST: LOST, DENY_LIST_REASON_REVOKED: REVOKED, DENY_LIST_REASON_CLONED: CLONED } = DenyListReason;
const { TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DEDUCTED, TAP_STATE_DECLINED, TAP_STATE_SETTLED, TAP_STATE_CAPPED } = TapState;

/** The whole history of a card, newest first. */
async function history(sys: System, cardId: string): Promise<IssuerTap[]> {
  return (await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId, pageSize: 500, pageToken: '' })).taps;
}

const getCard = async (sys: System, cardId: string) => (await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId })).card!;
const terminalStatus = (sys: System, i: number) => callUnary(sys.terminalClients[i], sys.terminalClients[i].getTerminalStatus, { unsentTapsLimit: 0 });
const balance = async (sys: System, accountId: string) =>
  BigInt((await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId })).account!.balance!.minorUnits);

/** Waits until every terminal holds the issuer's deny list at `version` or later. */
async function allTerminalsAt(sys: System, version: string, timeoutMs = 10_000): Promise<void> {
  await Promise.all(sys.terminals.map((_, i) => waitFor(async () => BigInt((await terminalStatus(sys, i)).denyListVersion) >= BigInt(version), timeoutMs)));
}
const issuerVersion = async (sys: System) =>
  (await callUnary(sys.issuerClient, sys.issuerClient.listDenyListChanges, { fromVersion: '0', pageSize: 1 })).headVersion;

async function enrolledRider(sys: System, n: number, funds = 10_000n): Promise<{ r: RiderDetails; card: CardImage }> {
  const r = rider(n);
  await openAccount(sys, r, funds);
  return { r, card: (await enroll(sys, newCard(sys, `C${n}`), r)).card };
}

async function expectAccepted(sys: System, card: CardImage, terminal = 0): Promise<CardImage> {
  const res = await tap(sys, card, terminal);
  expect(res.decision, `decline reason ${res.declineReason}`).to.equal(Decision.DECISION_ACCEPT);
  return res.card!;
}

async function expectDenyListed(sys: System, card: CardImage, terminal = 0): Promise<void> {
  const res = await tap(sys, card, terminal);
  expect([res.decision, res.declineReason]).to.deep.equal([Decision.DECISION_DECLINE, DeclineReason.DECLINE_REASON_DENY_LISTED]);
}

for (const tls of [false, true]) {
  describe(`deny list at the terminals${tls ? ' (mTLS)' : ''}`, () => {
    let sys: System;
    beforeEach(async () => (sys = await startSystem({ terminals: 2, tls })));
    afterEach(() => sys.close());

    it('declines a card listed at the issuer at both connected terminals within 2 seconds, and takes it again once unlisted', async () => {
      const { card: enrolled } = await enrolledRider(sys, 1);
      let card = await expectAccepted(sys, enrolled, 0);
      card = await expectAccepted(sys, card, 1);
      // Both terminals follow the issuer's stream.
      await Promise.all([0, 1].map((i) => waitFor(async () => (await terminalStatus(sys, i)).denyListSyncedAt)));

      const listed = await callUnary(sys.issuerClient, sys.issuerClient.addToDenyList, { cardId: 'C1', reason: LOST });
      expect(listed.entry!.reasons).to.deep.equal([LOST]);
      // The event itself, not a fixed sleep: each terminal reports the new version within 2 s.
      await allTerminalsAt(sys, listed.version, 2_000);
      await expectDenyListed(sys, card, 0);
      await expectDenyListed(sys, card, 1);
      expect((await terminalStatus(sys, 0)).denyListSize).to.equal('1');

      const again = await callUnary(sys.issuerClient, sys.issuerClient.addToDenyList, { cardId: 'C1', reason: LOST });
      expect(again.version, 'listing twice changes nothing').to.equal(listed.version);

      const removed = await callUnary(sys.issuerClient, sys.issuerClient.removeFromDenyList, { cardId: 'C1', reason: LOST });
      expect(removed.entry!.reasons).to.deep.equal([]);
      await allTerminalsAt(sys, removed.version, 2_000);
      card = await expectAccepted(sys, card, 0);
      await expectAccepted(sys, card, 1);
    });
  });
}

describe('debt recovery', () => {
  let sys: System;
  // Retries far apart: the rider's RetryDebts does the recovery here.
  beforeEach(async () => (sys = await startSystem({ issuer: { debtRetry: { baseMs: 600_000, maxMs: 600_000 } } })));
  afterEach(() => sys.close());

  it('declined debit -> card listed DEBT -> top-up -> RetryDebts -> tap DEDUCTED (recovered) and settled -> card unlisted', async () => {
    const { r, card: enrolled } = await enrolledRider(sys, 2, FARE); // funds for one ride
    let card = await expectAccepted(sys, enrolled);
    await waitFor(async () => (await history(sys, 'C2'))[0]?.state === TAP_STATE_SETTLED);

    // The second ride is accepted offline, but its debit is declined: a debt.
    const second = await tap(sys, card);
    expect(second.decision).to.equal(Decision.DECISION_ACCEPT);
    card = second.card!;
    const debt = await waitFor(async () => (await history(sys, 'C2')).find((t) => t.tap!.tapId === second.tap!.tapId && t.state === TAP_STATE_DECLINED));
    expect(debt.declineReason).to.equal('INSUFFICIENT_FUNDS');
    expect(debt.nextRetryAt).to.be.instanceOf(Date);
    const owing = await getCard(sys, 'C2');
    expect(owing.denyListReasons).to.deep.equal([DEBT]);
    expect(owing.outstandingDebt).to.deep.equal(money(FARE));

    // The gates learn it: the third ride is refused offline.
    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectDenyListed(sys, card);

    // A retry before the top-up is declined again and changes nothing else.
    const early = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.retryDebts, { cardId: 'C2' });
    expect([early.retriedCount, early.recoveredCount]).to.deep.equal([1, 0]);
    expect(early.denyListEntry!.reasons).to.deep.equal([DEBT]);

    await callUnary(sys.authorizerClient, sys.authorizerClient.topUp, { requestId: randomUUID(), accountId: r.accountId, amount: money(FARE * 2n) });
    const retried = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.retryDebts, { cardId: 'C2' });
    expect([retried.retriedCount, retried.recoveredCount]).to.deep.equal([1, 1]);
    expect(retried.outstandingDebt).to.deep.equal(money(0));
    expect(retried.denyListEntry!.reasons).to.deep.equal([]);

    const recovered = await waitFor(async () => (await history(sys, 'C2')).find((t) => t.tap!.tapId === second.tap!.tapId && t.state === TAP_STATE_SETTLED));
    expect(recovered.recovered).to.equal(true);
    expect(recovered.debtRetries).to.equal(2);
    expect(recovered.charged).to.deep.equal(money(FARE));
    expect(recovered.history.map((h) => h.state)).to.deep.equal([TAP_STATE_RECEIVED, TAP_STATE_DEDUCTING, TAP_STATE_DECLINED, TAP_STATE_DEDUCTED, TAP_STATE_SETTLED]);

    // Unlisted at the gates: the card rides again; the rider paid each ride once.
    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectAccepted(sys, card);
    await waitFor(async () => {
      const h = await history(sys, 'C2');
      return h.length === 3 && h.every((t) => t.state === TAP_STATE_SETTLED);
    });
    expect(await balance(sys, r.accountId)).to.equal(0n);
    await sys.authorizer.checkLedger();
  });
});

describe('debt recovery on the schedule', () => {
  let sys: System;
  beforeEach(async () => (sys = await startSystem({ issuer: { debtRetry: { baseMs: 20, maxMs: 100 }, debtPollIntervalMs: 20 } })));
  afterEach(() => sys.close());

  it('retries a debt by itself with backoff and recovers it after a top-up', async () => {
    const { r, card } = await enrolledRider(sys, 3, 0n + 1n); // not enough for one fare
    const res = await tap(sys, card);
    await waitFor(async () => (await getCard(sys, 'C3')).denyListReasons.includes(DEBT));
    // Retried again and again while the account cannot pay.
    await waitFor(async () => ((await history(sys, 'C3'))[0]?.debtRetries ?? 0) >= 2);
    await callUnary(sys.authorizerClient, sys.authorizerClient.topUp, { requestId: randomUUID(), accountId: r.accountId, amount: money(FARE) });
    const settled = await waitFor(async () => (await history(sys, 'C3')).find((t) => t.tap!.tapId === res.tap!.tapId && t.state === TAP_STATE_SETTLED));
    expect(settled.recovered).to.equal(true);
    expect((await getCard(sys, 'C3')).denyListReasons).to.deep.equal([]);
    expect(await balance(sys, r.accountId)).to.equal(1n);
    await sys.authorizer.checkLedger();
  });
});

describe('unenrollment and lost cards', () => {
  let sys: System;
  beforeEach(async () => (sys = await startSystem()));
  afterEach(() => sys.close());

  it('unenroll -> agreement revoked, card REVOKED and declined; earlier rides still paid; re-enrollment takes it again', async () => {
    const { r, card: enrolled } = await enrolledRider(sys, 4);
    const card = await expectAccepted(sys, enrolled);
    const agreementId = card.creditFlag!.agreementId;

    const { card: unenrolled } = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.unenrollCard, { cardId: 'C4', accountId: r.accountId });
    expect(unenrolled!.state).to.equal(CardState.CARD_STATE_UNENROLLED);
    expect(unenrolled!.denyListReasons).to.deep.equal([REVOKED]);
    expect(unenrolled!.enrollment).to.equal(undefined);
    expect((await sys.authorizer.db('agreements').where({ agreement_id: agreementId }).first('state')).state).to.equal('REVOKED');
    // Idempotent.
    const repeat = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.unenrollCard, { cardId: 'C4', accountId: r.accountId });
    expect(repeat.card!.state).to.equal(CardState.CARD_STATE_UNENROLLED);

    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectDenyListed(sys, card);
    // The ride taken before the unenrollment is still debited and settled.
    await waitFor(async () => (await history(sys, 'C4'))[0]?.state === TAP_STATE_SETTLED);

    const { card: again } = await enroll(sys, card, r);
    expect((await getCard(sys, 'C4')).denyListReasons).to.deep.equal([]);
    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectAccepted(sys, again);
  });

  it('a lost card is declined and cannot be enrolled again; the rider enrolls a new card on the same account', async () => {
    const { r, card: enrolled } = await enrolledRider(sys, 5);
    const card = await expectAccepted(sys, enrolled);
    await expectGrpcError(
      callUnary(sys.phone.issuerClient, sys.phone.issuerClient.reportCardLost, { cardId: 'C5', accountId: 'acc-someone-else' }),
      status.PERMISSION_DENIED,
      'ACCOUNT_MISMATCH',
    );
    const { card: lost } = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.reportCardLost, { cardId: 'C5', accountId: r.accountId });
    expect(lost!.state).to.equal(CardState.CARD_STATE_LOST);
    expect(lost!.denyListReasons).to.deep.equal([LOST]);
    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectDenyListed(sys, card);
    await expectGrpcError(enroll(sys, card, r), status.FAILED_PRECONDITION, 'CARD_LOST');

    const { card: replacement } = await enroll(sys, newCard(sys, 'C5b'), r);
    await expectAccepted(sys, replacement);
    await waitFor(async () => (await history(sys, 'C5b'))[0]?.state === TAP_STATE_SETTLED);
  });
});

describe('clone detection', () => {
  let sys: System;
  beforeEach(async () => (sys = await startSystem({ terminals: 2 })));
  afterEach(() => sys.close());

  it('lists a card CLONED when a copy of its image is used at another terminal, and keeps and marks both taps', async () => {
    const { card } = await enrolledRider(sys, 6);
    const copy: CardImage = { ...card }; // a perfect copy of the chip, key included
    const genuine = await tap(sys, card, 0);
    const cloned = await tap(sys, copy, 1);
    // Offline, each terminal sees a valid card.
    expect([genuine.decision, cloned.decision]).to.deep.equal([Decision.DECISION_ACCEPT, Decision.DECISION_ACCEPT]);
    expect(genuine.tap!.proof!.counter).to.equal(cloned.tap!.proof!.counter);

    await waitFor(async () => (await getCard(sys, 'C6')).denyListReasons.includes(CLONED));
    const taps = await waitFor(async () => {
      const h = await history(sys, 'C6');
      return h.length === 2 && h.every((t) => t.cloneSuspected) && h;
    });
    expect(taps.map((t) => t.cloneReason)).to.deep.equal(['COUNTER_REPEATED', 'COUNTER_REPEATED']);
    await allTerminalsAt(sys, await issuerVersion(sys));
    await expectDenyListed(sys, genuine.card!, 0);
    await expectDenyListed(sys, cloned.card!, 1);
  });
});

describe('fares and the daily cap', () => {
  let sys: System;
  // A service day that starts 12 hours from now, so the test never straddles it.
  const now = new Date();
  const dayStartMinutes = (now.getUTCHours() * 60 + now.getUTCMinutes() + 720) % 1440;
  beforeEach(
    async () =>
      (sys = await startSystem({
        terminals: 2,
        issuer: { fareCap: { dailyCapMinor: 700n, dayStartMinutes, utcOffsetMinutes: 0 } },
        // A tariff per line: T1 serves the metro line M1, T2 the bus route B2.
        terminal: (i) => (i === 1 ? { lineId: 'M1', fare: money(300) } : { lineId: 'B2', fare: money(200) }),
      })),
  );
  afterEach(() => sys.close());

  it('charges each line its fare until the cap, then exactly what is left, then nothing; the day totals the cap', async () => {
    const { r, card: enrolled } = await enrolledRider(sys, 7);
    let card = enrolled;
    const route = [0, 1, 0, 1, 0]; // M1 300, B2 200, M1 300 (capped to 200), B2 0, M1 0
    for (const [i, terminal] of route.entries()) {
      card = await expectAccepted(sys, card, terminal);
      // One at a time, so the issuer receives them in ride order (the cap applies in arrival order).
      await waitFor(async () => (await history(sys, 'C7')).length === i + 1);
    }
    const taps = await waitFor(async () => {
      const h = await history(sys, 'C7');
      return h.length === 5 && h.every((t) => t.state === TAP_STATE_SETTLED || t.state === TAP_STATE_CAPPED) && h;
    });
    const oldestFirst = [...taps].reverse();
    expect(oldestFirst.map((t) => [t.tap!.lineId, t.tap!.fare!.minorUnits, t.amountDue!.minorUnits, t.charged!.minorUnits, t.state])).to.deep.equal([
      ['M1', '300', '300', '300', TAP_STATE_SETTLED],
      ['B2', '200', '200', '200', TAP_STATE_SETTLED],
      ['M1', '300', '200', '200', TAP_STATE_SETTLED],
      ['B2', '200', '0', '0', TAP_STATE_CAPPED],
      ['M1', '300', '0', '0', TAP_STATE_CAPPED],
    ]);
    expect(new Set(taps.map((t) => t.serviceDay)).size).to.equal(1);
    expect(await balance(sys, r.accountId)).to.equal(10_000n - 700n);
    await sys.authorizer.checkLedger();
  });

  it('pages through the trip history newest first, each tap with its terminal, line, fare, charge and state', async () => {
    const { card: enrolled } = await enrolledRider(sys, 8);
    let card = enrolled;
    for (const terminal of [0, 1, 1, 0, 1]) card = await expectAccepted(sys, card, terminal);
    await waitFor(async () => (await history(sys, 'C8')).every((t) => t.state === TAP_STATE_SETTLED || t.state === TAP_STATE_CAPPED) && (await history(sys, 'C8')).length === 5);

    const seen: IssuerTap[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const page = await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.listCardTaps, { cardId: 'C8', pageSize: 2, pageToken });
      expect(page.taps.length).to.be.at.most(2);
      seen.push(...page.taps);
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).to.equal(3);
    expect(seen.map((t) => t.tap!.tapId)).to.deep.equal((await history(sys, 'C8')).map((t) => t.tap!.tapId));
    expect([...seen.map((t) => t.tap!.tapId)].sort()).to.deep.equal(['T1:1', 'T1:2', 'T2:1', 'T2:2', 'T2:3']);
    for (const t of seen) {
      expect(t.tap!.terminalId).to.equal(t.tap!.tapId.split(':')[0]);
      expect(t.tap!.lineId).to.equal(t.tap!.terminalId === 'T1' ? 'M1' : 'B2');
      expect(t.tap!.tappedAt).to.be.instanceOf(Date);
      expect(t.amountDue!.currencyCode).to.equal(CURRENCY);
      expect(t.charged).to.deep.equal(t.amountDue);
      expect(t.recovered).to.equal(false);
    }
    expect(seen.reduce((sum, t) => sum + BigInt(t.charged!.minorUnits), 0n)).to.equal(700n);
  });
});

describe('phone app commands for risk control', function () {
  this.timeout(60_000);
  let sys: System;
  beforeEach(async () => (sys = await startSystem()));
  afterEach(() => sys.close());

  /** Runs the phone CLI in a child process (asynchronously, so the in-process servers keep answering). */
  const phone = async (...args: string[]) => {
    const { execFile } = await import('node:child_process');
    const root = new URL('../../', import.meta.url).pathname;
    return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, ['--import', 'tsx', `${root}phone/cli.ts`, ...args, '--issuer', sys.issuer.address, '--insecure'], { cwd: root, env: { ...process.env, LOG_LEVEL: 'silent' } }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
  };

  it('history lists the rides, retry-debts answers what is owed, unenroll ends the binding', async () => {
    const { r, card } = await enrolledRider(sys, 9);
    await expectAccepted(sys, card);
    await waitFor(async () => (await history(sys, 'C9'))[0]?.state === TAP_STATE_SETTLED);

    const listed = await phone('history', '--card-id', 'C9');
    expect(listed.code, listed.stderr).to.equal(0);
    expect(JSON.parse(listed.stdout).taps).to.deep.equal([
      {
        tapId: 'T1:1',
        tappedAt: (await history(sys, 'C9'))[0].tap!.tappedAt!.toISOString(),
        terminalId: 'T1',
        fare: { currencyCode: CURRENCY, minorUnits: String(FARE) },
        amountDue: { currencyCode: CURRENCY, minorUnits: String(FARE) },
        charged: { currencyCode: CURRENCY, minorUnits: String(FARE) },
        state: 'TAP_STATE_SETTLED',
      },
    ]);

    const retried = await phone('retry-debts', '--card-id', 'C9');
    expect(retried.code, retried.stderr).to.equal(0);
    expect(JSON.parse(retried.stdout)).to.deep.include({ outstandingDebt: { currencyCode: CURRENCY, minorUnits: '0' } });

    const unenrolled = await phone('unenroll', '--card-id', 'C9', '--account', r.accountId);
    expect(unenrolled.code, unenrolled.stderr).to.equal(0);
    expect(JSON.parse(unenrolled.stdout).card).to.deep.include({ state: 'CARD_STATE_UNENROLLED', denyListReasons: ['DENY_LIST_REASON_REVOKED'] });
  });
});
