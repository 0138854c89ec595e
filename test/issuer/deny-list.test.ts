// The issuer's deny list: entries with several reasons, an append-only log
// under gap-free versions, idempotent listing, paging for the polling
// fallback, and the WatchDenyList stream over a real server.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { pino } from 'pino';
import { callUnary } from '../../common/rpc.js';
import {
  DenyListAction,
  DenyListReason,
  IssuerServiceClient,
  type WatchDenyListResponse,
} from '../../gen/tapcredit/issuer/v1/issuer.js';
import { addToDenyList, changesAfter, listDenyListChanges, removeFromDenyList } from '../../issuer/deny-list.js';
import { startIssuer, type IssuerHandle } from '../../issuer/service.js';
import { expectApiError, openTestIssuer, tableCounts, type TestIssuer } from './fixtures.js';
import { expectGrpcError, waitFor } from '../helpers/assert.js';

const { DENY_LIST_REASON_DEBT: DEBT, DENY_LIST_REASON_LOST: LOST, DENY_LIST_REASON_CLONED: CLONED } = DenyListReason;
const { DENY_LIST_ACTION_ADD: ADD, DENY_LIST_ACTION_REMOVE: REMOVE } = DenyListAction;

describe('issuer: deny list', () => {
  let t: TestIssuer;
  beforeEach(async () => (t = await openTestIssuer()));
  afterEach(() => t.close());

  it('logs each change under the next version with the reasons left, and lists a card until no reason remains', async () => {
    expect((await addToDenyList(t.ctx, { cardId: 'C1', reason: DEBT })).version).to.equal('1');
    expect((await addToDenyList(t.ctx, { cardId: 'C1', reason: LOST })).entry!.reasons).to.deep.equal([DEBT, LOST]);
    await addToDenyList(t.ctx, { cardId: 'C2', reason: CLONED });
    const afterDebt = await removeFromDenyList(t.ctx, { cardId: 'C1', reason: DEBT });
    expect([afterDebt.version, afterDebt.entry!.reasons]).to.deep.equal(['4', [LOST]]);
    const unlisted = await removeFromDenyList(t.ctx, { cardId: 'C1', reason: LOST });
    expect(unlisted.entry).to.deep.equal({ cardId: 'C1', reasons: [], listedAt: undefined });

    const log = await changesAfter(t.db, 0n, 100);
    expect(log.map((c) => [c.version, c.cardId, c.action, c.reason, c.reasons])).to.deep.equal([
      ['1', 'C1', ADD, DEBT, [DEBT]],
      ['2', 'C1', ADD, LOST, [DEBT, LOST]],
      ['3', 'C2', ADD, CLONED, [CLONED]],
      ['4', 'C1', REMOVE, DEBT, [LOST]],
      ['5', 'C1', REMOVE, LOST, []],
    ]);
  });

  it('is idempotent: listing a listed reason or removing an absent one logs nothing', async () => {
    await addToDenyList(t.ctx, { cardId: 'C1', reason: LOST });
    const counts = await tableCounts(t.db);
    expect((await addToDenyList(t.ctx, { cardId: 'C1', reason: LOST })).version).to.equal('1');
    expect((await removeFromDenyList(t.ctx, { cardId: 'C1', reason: DEBT })).version).to.equal('1');
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });

  it('hands out the log in version order past version 9 (numbers, not text: "10" after "9")', async () => {
    for (let i = 1; i <= 12; i++) await addToDenyList(t.ctx, { cardId: `C${i}`, reason: LOST });
    expect((await changesAfter(t.db, 3n, 100)).map((c) => c.version)).to.deep.equal(['4', '5', '6', '7', '8', '9', '10', '11', '12']);
    expect((await listDenyListChanges(t.ctx, { fromVersion: '8', pageSize: 2 })).changes.map((c) => c.version)).to.deep.equal(['9', '10']);
  });

  it('pages the log after a version, and tells a caller ahead of the log to reset', async () => {
    for (let i = 1; i <= 5; i++) await addToDenyList(t.ctx, { cardId: `C${i}`, reason: LOST });
    const page = await listDenyListChanges(t.ctx, { fromVersion: '1', pageSize: 2 });
    expect([page.changes.map((c) => c.version), page.headVersion, page.reset]).to.deep.equal([['2', '3'], '5', false]);
    expect((await listDenyListChanges(t.ctx, { fromVersion: '5', pageSize: 0 })).changes).to.deep.equal([]);
    const ahead = await listDenyListChanges(t.ctx, { fromVersion: '9', pageSize: 0 });
    expect([ahead.reset, ahead.changes.map((c) => c.version)]).to.deep.equal([true, ['1', '2', '3', '4', '5']]);
  });

  it('refuses bad input and stores nothing', async () => {
    const counts = await tableCounts(t.db);
    let err = await expectApiError(addToDenyList(t.ctx, { cardId: '', reason: 0 }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['card_id', 'reason']);
    err = await expectApiError(removeFromDenyList(t.ctx, { cardId: 'C1', reason: 99 as DenyListReason }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['reason']);
    err = await expectApiError(listDenyListChanges(t.ctx, { fromVersion: '-1', pageSize: -1 }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
    expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['from_version', 'page_size']);
    expect(await tableCounts(t.db)).to.deep.equal(counts);
  });
});

describe('issuer: WatchDenyList stream', () => {
  let dir: string;
  let issuer: IssuerHandle;
  let client: IssuerServiceClient;
  const calls: ClientReadableStream<WatchDenyListResponse>[] = [];

  /** Opens a stream and collects its messages. */
  function watch(fromVersion: string) {
    const call = client.watchDenyList({ fromVersion, terminalId: 'T1' }, new Metadata());
    calls.push(call);
    const messages: WatchDenyListResponse[] = [];
    const ended = new Promise<ServiceError | undefined>((resolve) => {
      call.on('error', (err: ServiceError) => resolve(err));
      call.on('end', () => resolve(undefined));
    });
    call.on('data', (m: WatchDenyListResponse) => messages.push(m));
    const versions = () => messages.flatMap((m) => m.changes.map((c) => c.version));
    return { call, messages, versions, ended };
  }
  const list = (cardId: string) => callUnary(client, client.addToDenyList, { cardId, reason: LOST });

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapcredit-watch-'));
    issuer = await startIssuer({
      issuerId: 'issuer-1',
      issuerCode: 'CITY1',
      currencyCode: 'CNY',
      databaseUrl: join(dir, 'issuer.sqlite'),
      host: '127.0.0.1',
      port: 0,
      authorizerAddress: '127.0.0.1:9', // not called by these tests
      masterKey: randomBytes(32),
      signingKey: generateKeyPairSync('ed25519').privateKey,
      log: pino({ level: 'silent' }),
    });
    client = new IssuerServiceClient(issuer.address, credentials.createInsecure());
  });
  afterEach(async () => {
    for (const c of calls.splice(0)) c.cancel();
    client.close();
    await issuer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends what the caller missed, then each new change as it is made', async () => {
    await list('C1');
    await list('C2');
    const w = watch('1');
    await waitFor(() => w.messages.length >= 1);
    expect([w.messages[0].headVersion, w.versions()]).to.deep.equal(['2', ['2']]);
    await list('C3');
    await waitFor(() => w.versions().includes('3'));
    expect(w.versions()).to.deep.equal(['2', '3']);
  });

  it('answers an up-to-date caller with an empty first message', async () => {
    await list('C1');
    const w = watch('1');
    await waitFor(() => w.messages.length >= 1);
    expect(w.messages[0]).to.deep.equal({ changes: [], headVersion: '1', reset: false });
  });

  it('resets a caller that is ahead of the log', async () => {
    await list('C1');
    const w = watch('7');
    await waitFor(() => w.messages.length >= 1);
    expect([w.messages[0].reset, w.versions()]).to.deep.equal([true, ['1']]);
  });

  it('refuses a bad from_version with INVALID_ARGUMENT', async () => {
    const w = watch('-3');
    const err = await w.ended;
    expect(err?.code).to.equal(status.INVALID_ARGUMENT);
    await expectGrpcError(callUnary(client, client.listDenyListChanges, { fromVersion: '-5', pageSize: 0 }), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  });

  it('ends open streams when the issuer shuts down, without waiting out the grace period', async () => {
    const w = watch('0');
    await waitFor(() => w.messages.length >= 1);
    const started = process.hrtime.bigint();
    await issuer.close();
    await w.ended;
    expect(Number(process.hrtime.bigint() - started) / 1e6).to.be.below(4_000);
  });
});
