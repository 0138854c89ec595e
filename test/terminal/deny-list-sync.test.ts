// The terminal's copy of the deny list: versioned application of the issuer's
// changes, the syncer following a real issuer's WatchDenyList stream across
// an issuer restart and a terminal outage, the polling fallback, and the
// tariff that sets a terminal's fare.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, Server, ServerCredentials, status, type ServiceError, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { expect } from 'chai';
import { openDatabase, type Db } from '../../common/db.js';
import { presentCardImage } from '../../common/present-card.js';
import { callUnary } from '../../common/rpc.js';
import {
  DenyListAction,
  DenyListReason,
  IssuerServiceClient,
  IssuerServiceService,
  type DenyListChange,
  type ListDenyListChangesRequest,
  type ListDenyListChangesResponse,
} from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, DeclineReason, TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { startIssuer, type IssuerConfig, type IssuerHandle } from '../../issuer/service.js';
import { terminalMigrations } from '../../terminal/migrations.js';
import type { TerminalHandle } from '../../terminal/service.js';
import { TerminalStore } from '../../terminal/store.js';
import { fareForLine, parseTariff, readTariffFile } from '../../terminal/tariff.js';
import { enrolledCard, removeDir, silentLog, startTestTerminal, tempDir, waitFor } from './fixtures.js';

const { DENY_LIST_REASON_DEBT: DEBT, DENY_LIST_REASON_LOST: LOST } = DenyListReason;
const change = (version: number, cardId: string, reasons: DenyListReason[]): DenyListChange => ({
  version: String(version),
  cardId,
  action: reasons.length > 0 ? DenyListAction.DENY_LIST_ACTION_ADD : DenyListAction.DENY_LIST_ACTION_REMOVE,
  reason: reasons[0] ?? LOST,
  reasons,
  changedAt: new Date(),
});

describe('terminal store: applying deny-list changes', () => {
  let dir: string;
  let db: Db;
  let store: TerminalStore;
  beforeEach(async () => {
    dir = tempDir();
    db = await openDatabase({ url: join(dir, 'terminal.sqlite'), migrations: terminalMigrations, migrationsTable: 'terminal_migrations' });
    store = await TerminalStore.open(db);
  });
  afterEach(async () => {
    await db.destroy();
    removeDir(dir);
  });

  it('applies changes in version order, unlists a card with no reason left, and skips changes it already holds', async () => {
    expect(await store.applyDenyListChanges([change(1, 'C1', [DEBT]), change(2, 'C2', [LOST]), change(3, 'C1', [DEBT, LOST])])).to.equal(3n);
    expect(await db('deny_list').orderBy('card_id').select('card_id', 'reason')).to.deep.equal([
      { card_id: 'C1', reason: 'DEBT,LOST' },
      { card_id: 'C2', reason: 'LOST' },
    ]);
    // A resend after a reconnect overlaps what is held.
    expect(await store.applyDenyListChanges([change(3, 'C1', [DEBT, LOST]), change(4, 'C1', [])])).to.equal(4n);
    expect(store.isDenyListed('C1')).to.equal(false);
    expect(store.isDenyListed('C2')).to.equal(true);
    expect(await store.counts()).to.deep.include({ denyListVersion: '4', denyListSize: 1 });
  });

  it('refuses a gap in the versions and keeps what it held', async () => {
    await store.applyDenyListChanges([change(1, 'C1', [DEBT])]);
    let error: unknown;
    await store.applyDenyListChanges([change(3, 'C2', [LOST])]).catch((err) => (error = err));
    expect(String(error)).to.match(/does not follow the version held \(1\)/);
    expect(await store.denyListVersion()).to.equal(1n);
    expect(store.isDenyListed('C2')).to.equal(false);
  });

  it('drops its copy on reset and rebuilds it from the changes given', async () => {
    await store.applyDenyListChanges([change(1, 'C1', [DEBT]), change(2, 'C2', [LOST])]);
    expect(await store.applyDenyListChanges([change(1, 'C9', [LOST])], true)).to.equal(1n);
    expect(await db('deny_list').select('card_id')).to.deep.equal([{ card_id: 'C9' }]);
    expect(['C1', 'C2', 'C9'].map((id) => store.isDenyListed(id))).to.deep.equal([false, false, true]);
  });

  it('decides from memory what the table holds: after a refused batch, and when opened again', async () => {
    await store.applyDenyListChanges([change(1, 'C1', [DEBT]), change(2, 'C2', [LOST])]);
    // A batch refused half way (a gap after a good change) commits nothing, in the table or in memory.
    await store.applyDenyListChanges([change(3, 'C3', [LOST]), change(5, 'C4', [LOST])]).catch(() => {});
    expect(['C1', 'C2', 'C3', 'C4'].map((id) => store.isDenyListed(id))).to.deep.equal([true, true, false, false]);
    const reopened = await TerminalStore.open(db);
    expect(['C1', 'C2', 'C3'].map((id) => reopened.isDenyListed(id))).to.deep.equal([true, true, false]);
  });
});

describe('terminal: deny-list syncer', () => {
  let dir: string;
  let issuer: IssuerHandle | undefined;
  let terminal: TerminalHandle | undefined;
  let issuerClient: IssuerServiceClient | undefined;
  let terminalClient: TerminalServiceClient | undefined;
  const masterKey = randomBytes(32);
  const signingKey = generateKeyPairSync('ed25519').privateKey;

  const issuerConfig = (port: number): IssuerConfig => ({
    issuerId: 'issuer-1',
    issuerCode: 'CITY1',
    currencyCode: 'CNY',
    databaseUrl: join(dir, 'issuer.sqlite'),
    host: '127.0.0.1',
    port,
    authorizerAddress: '127.0.0.1:9', // not called: only the deny list is exercised
    masterKey,
    signingKey,
    log: silentLog,
  });
  async function startRealIssuer(port = 0) {
    issuer = await startIssuer(issuerConfig(port));
    issuerClient?.close();
    issuerClient = new IssuerServiceClient(issuer.address, credentials.createInsecure());
  }
  async function startTerminalAt(address: string) {
    terminal = await startTestTerminal(dir, address, { denyListMinBackoffMs: 20, denyListMaxBackoffMs: 200 });
    terminalClient?.close();
    terminalClient = new TerminalServiceClient(terminal.address, credentials.createInsecure());
  }
  const list = (cardId: string) => callUnary(issuerClient!, issuerClient!.addToDenyList, { cardId, reason: LOST });
  const heldVersion = async () => (await callUnary(terminalClient!, terminalClient!.getTerminalStatus, { unsentTapsLimit: 0 })).denyListVersion;
  const decision = (cardId: string) => presentCardImage(terminalClient!, enrolledCard(cardId));

  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(async () => {
    terminalClient?.close();
    issuerClient?.close();
    await terminal?.close();
    await issuer?.close();
    terminal = issuer = undefined;
    terminalClient = issuerClient = undefined;
    removeDir(dir);
  });

  it('declines a card as soon as the issuer lists it, and follows the issuer across a restart', async () => {
    await startRealIssuer();
    await startTerminalAt(issuer!.address);
    expect((await decision('C1')).decision).to.equal(Decision.DECISION_ACCEPT);
    const { version } = await list('C1');
    await waitFor(async () => (await heldVersion()) === version);
    expect(await decision('C1')).to.deep.include({ decision: Decision.DECISION_DECLINE, declineReason: DeclineReason.DECLINE_REASON_DENY_LISTED });

    // The issuer goes away and comes back on the same address: the stream is opened again.
    const port = issuer!.port;
    await issuer!.close();
    await startRealIssuer(port);
    // The channel to the old address may still be backing off: retry until the new issuer answers.
    const second = await waitFor(() => list('C2'));
    await waitFor(async () => (await heldVersion()) === second.version);
    expect((await decision('C2')).declineReason).to.equal(DeclineReason.DECLINE_REASON_DENY_LISTED);
  });

  it('stops at once when the terminal closes right after starting, before its stream is open', async () => {
    await startRealIssuer();
    await startTerminalAt(issuer!.address);
    // The stream opens after the version held is read; a close in between must still end it (not wait for its 45 s watchdog).
    await terminal!.close();
    terminal = undefined;
  });

  it('catches up on what it missed while it was off', async () => {
    await startRealIssuer();
    await startTerminalAt(issuer!.address);
    await list('C1');
    await waitFor(async () => (await heldVersion()) === '1');
    await terminal!.close();
    await list('C2');
    await list('C3');
    await callUnary(issuerClient!, issuerClient!.removeFromDenyList, { cardId: 'C1', reason: LOST });
    await startTerminalAt(issuer!.address);
    await waitFor(async () => (await heldVersion()) === '4');
    expect((await terminal!.db('deny_list').orderBy('card_id').select('card_id')).map((r: { card_id: string }) => r.card_id)).to.deep.equal(['C2', 'C3']);
    expect((await decision('C1')).decision).to.equal(Decision.DECISION_ACCEPT);
  });

  it('falls back to polling ListDenyListChanges when the issuer offers no stream', async () => {
    // An issuer that only answers the polling RPC (WatchDenyList is UNIMPLEMENTED).
    const changes = [change(1, 'C1', [LOST])];
    const server = new Server();
    const impl: UntypedServiceImplementation = {
      listDenyListChanges: (call: { request: ListDenyListChangesRequest }, cb: (err: Partial<ServiceError> | null, res?: ListDenyListChangesResponse) => void) => {
        const after = changes.filter((c) => BigInt(c.version) > BigInt(call.request.fromVersion));
        cb(null, { changes: after, headVersion: String(changes.length), reset: false });
      },
      tapReport: (_call: unknown, cb: (err: Partial<ServiceError>) => void) => cb({ code: status.UNAVAILABLE, details: 'fake' }),
    };
    server.addService(IssuerServiceService, impl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    try {
      await startTerminalAt(`127.0.0.1:${port}`);
      await waitFor(async () => (await heldVersion()) === '1');
      changes.push(change(2, 'C2', [DEBT]));
      await waitFor(async () => (await heldVersion()) === '2');
      expect((await decision('C2')).declineReason).to.equal(DeclineReason.DECLINE_REASON_DENY_LISTED);
    } finally {
      server.forceShutdown();
    }
  });
});

describe('terminal: tariff', () => {
  it('gives each line its flat fare', () => {
    const tariff = parseTariff('CNY:M1=300,B12=200');
    expect(fareForLine(tariff, 'M1')).to.deep.equal({ currencyCode: 'CNY', minorUnits: '300' });
    expect(fareForLine(tariff, 'B12')).to.deep.equal({ currencyCode: 'CNY', minorUnits: '200' });
    expect(() => fareForLine(tariff, 'X')).to.throw(/not in the tariff/);
  });

  it('reads a JSON tariff file', () => {
    const dir = tempDir();
    try {
      const file = join(dir, 'tariff.json');
      writeFileSync(file, JSON.stringify({ currency: 'CNY', lines: { M1: 300 } }));
      expect(fareForLine(readTariffFile(file), 'M1').minorUnits).to.equal('300');
    } finally {
      removeDir(dir);
    }
  });

  it('refuses a malformed tariff', () => {
    expect(() => parseTariff('M1=300')).to.throw(/must look like/);
    expect(() => parseTariff('CNY:M1=0')).to.throw(/positive/);
    expect(() => parseTariff('CNY:M1=2.5')).to.throw(/whole number/);
    expect(() => parseTariff('CNY:M 1=200')).to.throw(/line id/);
  });

  it('records the line on each tap and in the status', async () => {
    const dir = tempDir();
    const terminal = await startTestTerminal(dir, '127.0.0.1:9', { lineId: 'M1', fare: { currencyCode: 'CNY', minorUnits: '300' }, denyListSync: false });
    const client = new TerminalServiceClient(terminal.address, credentials.createInsecure());
    try {
      const res = await presentCardImage(client, enrolledCard('C1'));
      expect([res.tap!.lineId, res.tap!.fare!.minorUnits]).to.deep.equal(['M1', '300']);
      expect((await callUnary(client, client.getTerminalStatus, { unsentTapsLimit: 0 })).lineId).to.equal('M1');
    } finally {
      client.close();
      await terminal.close();
      removeDir(dir);
    }
  });
});
