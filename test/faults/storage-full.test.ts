// A full disk or database at each server (issue 19). SQLite's max_page_count
// pragma caps the database where it stands and a filler table takes what is
// left, as a full disk would: every write that needs a new page fails with
// SQLITE_FULL. Each server must answer it with a clear status (never
// INTERNAL), turn health NOT_SERVING with tapcredit_storage_full 1, and recover
// without a restart once the cap is lifted, losing nothing and charging
// nothing twice.
import { credentials, makeGenericClientConstructor, status, type Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import { toServiceError } from '../../common/errors.js';
import { decodeErrorDetails } from '../../common/errors.js';
import { callUnary } from '../../common/rpc.js';
import type { Db } from '../../common/db.js';
import { Decision, DeclineReason } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { expectGrpcError, sleep, waitFor } from '../helpers/assert.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

const HealthClient = makeGenericClientConstructor(healthService, 'Health');

async function healthOf(address: string, serviceName: string): Promise<string> {
  const client = new HealthClient(address, credentials.createInsecure()) as unknown as Client & {
    check(req: { service: string }, cb: (err: Error | null, res: { status: string | number }) => void): void;
  };
  try {
    return await new Promise((resolve, reject) => client.check({ service: serviceName }, (err, res) => (err ? reject(err) : resolve(String(res.status)))));
  } finally {
    client.close();
  }
}

async function metricValue(address: string | undefined, name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

const UNLIMITED_PAGES = 1073741823;

/** Fills a SQLite database as a full disk would: no page beyond those it has, and filler rows in every free one. */
async function fillDatabase(db: Db): Promise<void> {
  // The filler table first: its root page may need a page the cap would refuse.
  await db.raw('CREATE TABLE IF NOT EXISTS test_filler (pad TEXT)');
  const [{ page_count: pages }] = await db.raw('PRAGMA page_count');
  await db.raw(`PRAGMA max_page_count = ${Number(pages)}`);
  // Big rows first, then small ones, until not even a small row fits.
  for (const size of [4000, 500, 50]) {
    for (;;) {
      try {
        await db('test_filler').insert({ pad: 'f'.repeat(size) });
      } catch (err) {
        expect((err as { code?: string }).code).to.equal('SQLITE_FULL');
        break;
      }
    }
  }
}

const freeDatabase = (db: Db) => db.raw(`PRAGMA max_page_count = ${UNLIMITED_PAGES}`);

/** Sends writes until one is refused: each passes or fails UNAVAILABLE STORAGE_FULL (never INTERNAL). Returns the refused one's number. */
async function refusedWithin(attempts: number, write: (n: number) => Promise<unknown>): Promise<number> {
  for (let n = 0; n < attempts; n++) {
    try {
      await write(n);
    } catch (err) {
      await expectGrpcError(Promise.reject(err), status.UNAVAILABLE, 'STORAGE_FULL');
      return n;
    }
  }
  return expect.fail(`no write was refused within ${attempts}`);
}

const fast = { healthProbeIntervalMs: 50 };

describe('a full disk or database (issue 19)', function () {
  this.timeout(60_000);
  let sys: System;

  beforeEach(async () => {
    sys = await startSystem({ metrics: true, issuer: fast, authorizer: fast, terminal: () => fast });
  });
  afterEach(() => sys.close());

  async function riderWithCard(n: number): Promise<CardImage> {
    const r = rider(n);
    await openAccount(sys, r);
    return (await enroll(sys, newCard(sys, `card-full-${n}`), r)).card;
  }

  const issuerTapIds = async (cardId: string) => (await sys.issuer.db('taps').where({ card_id: cardId }).select('tap_id')).map((r: { tap_id: string }) => r.tap_id);

  it('the mapping: SQLITE_FULL and PostgreSQL 53100 are UNAVAILABLE STORAGE_FULL, a lost connection DATABASE_UNAVAILABLE, never INTERNAL', () => {
    for (const code of ['SQLITE_FULL', '53100']) {
      const err = toServiceError(Object.assign(new Error('no space'), { code }), 'test.tapcredit');
      expect(err.code).to.equal(status.UNAVAILABLE);
      expect(decodeErrorDetails(err as never).errorInfo?.reason).to.equal('STORAGE_FULL');
    }
    // A lost connection (a database restart) is retryable too, with its own reason; an unknown fault stays INTERNAL.
    for (const fault of [{ code: '57P01' }, { code: '08006' }, { code: 'ECONNREFUSED' }, { message: 'Connection terminated unexpectedly' }]) {
      const err = toServiceError(Object.assign(new Error(fault.message ?? 'lost'), fault), 'test.tapcredit');
      expect(err.code, JSON.stringify(fault)).to.equal(status.UNAVAILABLE);
      expect(decodeErrorDetails(err as never).errorInfo?.reason).to.equal('DATABASE_UNAVAILABLE');
    }
    expect(toServiceError(Object.assign(new Error('boom'), { code: '42P01' }), 'test.tapcredit').code).to.equal(status.INTERNAL);
  });

  it('terminal: declines OUT_OF_SERVICE (no ACCEPT without a record), NOT_SERVING, metric; recovers and forwards every accepted tap once', async () => {
    let card = await riderWithCard(1);
    const terminal = sys.terminals[0];
    const first = await tap(sys, card);
    expect(first.decision).to.equal(Decision.DECISION_ACCEPT);
    card = first.card;
    const accepted = [first.tap!.tapId];
    await waitFor(async () => (await metricValue(terminal.metricsAddress, 'tapcredit_storage_full')) === 0);

    await fillDatabase(terminal.db);
    // Taps may still fit in the last page; the first that does not is declined, never failed.
    let declined;
    for (let i = 0; i < 200 && !declined; i++) {
      const result = await tap(sys, card);
      card = result.card;
      if (result.decision === Decision.DECISION_ACCEPT) accepted.push(result.tap!.tapId);
      else declined = result;
    }
    expect(declined?.declineReason).to.equal(DeclineReason.DECLINE_REASON_OUT_OF_SERVICE);
    expect(await healthOf(terminal.address, 'tapcredit.terminal.v1.TerminalService')).to.equal('NOT_SERVING');
    expect(await metricValue(terminal.metricsAddress, 'tapcredit_storage_full')).to.equal(1);
    expect(await metricValue(terminal.metricsAddress, 'tapcredit_storage_write_failures_total')).to.be.greaterThan(0);

    // While full, a card is refused before it is debited: it leaves the field as it came.
    const whileFull = await tap(sys, card);
    expect(whileFull.declineReason).to.equal(DeclineReason.DECLINE_REASON_OUT_OF_SERVICE);
    expect(whileFull.card).to.deep.equal(card);

    await freeDatabase(terminal.db);
    await waitFor(async () => (await healthOf(terminal.address, 'tapcredit.terminal.v1.TerminalService')) === 'SERVING');
    expect(await metricValue(terminal.metricsAddress, 'tapcredit_storage_full')).to.equal(0);
    const after = await tap(sys, card);
    expect(after.decision).to.equal(Decision.DECISION_ACCEPT);
    accepted.push(after.tap!.tapId);

    // Every accepted tap is stored and reaches the issuer exactly once; no declined tap does.
    const stored = (await terminal.db('taps').select('tap_id')).map((r: { tap_id: string }) => r.tap_id);
    expect(stored.sort()).to.deep.equal([...accepted].sort());
    await waitFor(async () => (await issuerTapIds(first.tap!.cardId)).length === accepted.length, 20_000);
    expect((await issuerTapIds(first.tap!.cardId)).sort()).to.deep.equal([...accepted].sort());
  });

  it('issuer: refuses writes UNAVAILABLE STORAGE_FULL, NOT_SERVING, metric; the terminal keeps its taps until the issuer takes them, once', async () => {
    const card = await riderWithCard(2);
    const issuer = sys.issuers[0];
    await fillDatabase(issuer.db);
    await waitFor(async () => (await healthOf(issuer.address, 'tapcredit.issuer.v1.IssuerService')) === 'NOT_SERVING');
    expect(await metricValue(issuer.metricsAddress, 'tapcredit_storage_full')).to.equal(1);
    // Writes the issuer receives pass while they fit in pages it has, then are refused with a retryable status.
    await refusedWithin(50, async (n) => {
      const r = rider(100 + n);
      await openAccount(sys, r);
      await enroll(sys, newCard(sys, `card-fill-${n}`), r);
    });

    // The terminal decides offline and stores; the issuer takes a tap where it still fits, else refuses it and the terminal keeps it.
    let card2 = card;
    const accepted: string[] = [];
    for (let i = 0; i < 5; i++) {
      const result = await tap(sys, card2);
      expect(result.decision).to.equal(Decision.DECISION_ACCEPT);
      accepted.push(result.tap!.tapId);
      card2 = result.card;
    }
    const terminal = sys.terminals[0];
    const unsent = async () => (await terminal.db('taps').whereNull('acked_at').select('tap_id')).map((r: { tap_id: string }) => r.tap_id);
    const cardId = (await terminal.db('taps').first('card_id')).card_id as string;
    // Nothing is lost meanwhile: each accepted tap is at the issuer or still in the terminal's outbox.
    await sleep(300);
    expect([...(await issuerTapIds(cardId)), ...(await unsent())].sort()).to.include.members(accepted);
    await freeDatabase(issuer.db);
    await waitFor(async () => (await healthOf(issuer.address, 'tapcredit.issuer.v1.IssuerService')) === 'SERVING');
    expect(await metricValue(issuer.metricsAddress, 'tapcredit_storage_full')).to.equal(0);
    await waitFor(async () => (await metricValue(terminal.metricsAddress, 'tapcredit_terminal_unsent_taps')) === 0, 20_000);
    // Every tap at the issuer exactly once.
    expect((await issuerTapIds(cardId)).sort()).to.deep.equal([...accepted].sort());
  });

  it('authorizer: refuses writes UNAVAILABLE STORAGE_FULL, NOT_SERVING, metric; serves again once space returns', async () => {
    const authorizer = sys.authorizers[0];
    await fillDatabase(authorizer.db);
    await waitFor(async () => (await healthOf(authorizer.address, 'tapcredit.authorizer.v1.AuthorizerService')) === 'NOT_SERVING');
    expect(await metricValue(authorizer.metricsAddress, 'tapcredit_storage_full')).to.equal(1);
    const r = rider(200 + (await refusedWithin(100, (n) => openAccount(sys, rider(200 + n), 0n))));

    await freeDatabase(authorizer.db);
    await waitFor(async () => (await healthOf(authorizer.address, 'tapcredit.authorizer.v1.AuthorizerService')) === 'SERVING');
    expect(await metricValue(authorizer.metricsAddress, 'tapcredit_storage_full')).to.equal(0);
    // The same request again passes: it was refused whole, nothing half-done.
    await openAccount(sys, r, 0n);
    const account = await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId: r.accountId });
    expect(account.account?.accountId).to.equal(r.accountId);
  });
});
