// The operator's scripts (scripts/ops/) against real servers, by server
// reflection only: plaintext, and over mTLS with the ops certificate.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { removeDir, tempDir } from '../helpers/assert.js';
import { captureLogs } from '../helpers/logs.js';
import { FARE, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';
import { jsonDocuments, opsEnv, runOps, writeOpsCerts } from './helpers.js';

for (const tls of [false, true])
  describe(`ops scripts (${tls ? 'mTLS' : 'plaintext'})`, function () {
    let sys: System;
    let env: NodeJS.ProcessEnv;
    let serviceDay: string;
    // Over mTLS only the scripts that show both ways certificates are passed (a call, a reflection listing) run again.
    const plaintextOnly = (title: string, fn: () => Promise<void>) => (tls ? undefined : it(title, fn));
    before(async () => {
      sys = await startSystem({ tls, log: captureLogs().log });
      env = opsEnv(sys, tls ? writeOpsCerts(sys) : undefined);
      const r = rider(1);
      await openAccount(sys, r);
      const { card } = await enroll(sys, newCard(sys, 'C1'), r);
      await tap(sys, card);
      const [settled] = await waitFor(async () => {
        const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C1', pageSize: 10, pageToken: '' });
        return taps[0]?.state === TapState.TAP_STATE_SETTLED && taps;
      });
      serviceDay = settled.tap!.tappedAt!.toISOString().slice(0, 10); // the issuer's service day is the UTC date
    });
    after(async () => {
      await sys.close();
    });

    it('health.sh reports every server SERVING', async () => {
      const res = await runOps('health.sh', [], env);
      expect(res.stderr).to.equal('');
      expect(res.stdout.trim().split('\n')).to.deep.equal([
        `terminal ${sys.terminals[0].address} SERVING`,
        `issuer ${sys.issuer.address} SERVING`,
        `authorizer ${sys.authorizer.address} SERVING`,
      ]);
      expect(res.code).to.equal(0);
    });

    plaintextOnly('health.sh fails for a server that does not answer', async () => {
      const res = await runOps('health.sh', ['issuer'], { ...env, ISSUER_ADDRESS: '127.0.0.1:1' });
      expect(res.stdout.trim()).to.equal('issuer 127.0.0.1:1 UNREACHABLE');
      expect(res.code).to.equal(1);
    });

    it('services.sh lists each server\'s services by reflection', async () => {
      const res = await runOps('services.sh', [], env);
      expect(res.code, res.stderr).to.equal(0);
      for (const name of ['tapcredit.terminal.v1.TerminalService', 'tapcredit.issuer.v1.IssuerService', 'tapcredit.authorizer.v1.AuthorizerService', 'grpc.health.v1.Health']) {
        expect(res.stdout).to.include(name);
      }
    });

    it('card.sh shows a card\'s binding, state and recent taps', async () => {
      const res = await runOps('card.sh', ['C1', '5'], env);
      expect(res.code, res.stderr).to.equal(0);
      const [card, taps] = jsonDocuments(res.stdout);
      expect(card.card).to.include({ cardId: 'C1', state: 'CARD_STATE_ENROLLED' });
      expect(card.card.enrollment.accountId).to.equal('acc-1');
      expect(taps.taps).to.have.length(1);
      expect(taps.taps[0].state).to.equal('TAP_STATE_SETTLED');
    });

    plaintextOnly('card.sh passes the server\'s error on for an unknown card', async () => {
      const res = await runOps('card.sh', ['NO-SUCH-CARD'], env);
      expect(res.code).to.not.equal(0);
      expect(res.stderr).to.match(/not.?found/i);
    });

    plaintextOnly('unsent-taps.sh shows the terminal\'s unsent taps and counts', async () => {
      const res = await runOps('unsent-taps.sh', ['10'], env);
      expect(res.code, res.stderr).to.equal(0);
      const [status] = jsonDocuments(res.stdout);
      expect(status).to.include({ terminalId: 'T1', acceptedTapCount: '1', unsentTapCount: '0' });
      expect(status.unsentTaps).to.deep.equal([]);
    });

    plaintextOnly('list-card.sh, deny-list.sh and unlist-card.sh manage the deny list, which the terminal follows', async () => {
      const listed = await runOps('list-card.sh', ['LOST-CARD', 'LOST'], env);
      expect(listed.code, listed.stderr).to.equal(0);
      const [entry] = jsonDocuments(listed.stdout);
      expect(entry.entry).to.deep.include({ cardId: 'LOST-CARD', reasons: ['DENY_LIST_REASON_LOST'] });
      const version = Number(entry.version);

      const list = await runOps('deny-list.sh', [], env);
      expect(list.code, list.stderr).to.equal(0);
      const [changes] = jsonDocuments(list.stdout);
      expect(Number(changes.headVersion)).to.equal(version);
      expect(changes.changes.at(-1)).to.include({ cardId: 'LOST-CARD', action: 'DENY_LIST_ACTION_ADD', reason: 'DENY_LIST_REASON_LOST' });
      // The terminal syncs to the version; unsent-taps.sh shows what it holds.
      await waitFor(async () => Number(jsonDocuments((await runOps('unsent-taps.sh', [], env)).stdout)[0].denyListVersion) === version);

      const unlisted = await runOps('unlist-card.sh', ['LOST-CARD', 'LOST'], env);
      expect(unlisted.code, unlisted.stderr).to.equal(0);
      expect(jsonDocuments(unlisted.stdout)[0].entry.reasons).to.deep.equal([]);
      const after = jsonDocuments((await runOps('deny-list.sh', [String(version)], env)).stdout)[0];
      expect(after.changes).to.have.length(1);
      expect(after.changes[0]).to.include({ cardId: 'LOST-CARD', action: 'DENY_LIST_ACTION_REMOVE' });
    });

    plaintextOnly('retry-debts.sh recovers a card\'s debt once the rider has funds', async () => {
      const r = rider(2);
      await openAccount(sys, r, FARE / 2n);
      const { card } = await enroll(sys, newCard(sys, 'C2'), r);
      await tap(sys, card);
      await waitFor(async () => {
        const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C2', pageSize: 10, pageToken: '' });
        return taps[0]?.state === TapState.TAP_STATE_DECLINED;
      });
      await callUnary(sys.authorizerClient, sys.authorizerClient.topUp, { requestId: 'ops-topup-2', accountId: r.accountId, amount: money(FARE * 5n) });
      const res = await runOps('retry-debts.sh', ['C2'], env);
      expect(res.code, res.stderr).to.equal(0);
      const [retried] = jsonDocuments(res.stdout);
      expect(retried).to.include({ retriedCount: 1, recoveredCount: 1 });
      expect(retried.outstandingDebt.minorUnits).to.equal('0');
    });

    plaintextOnly('reconciliation.sh reports a service day: taps by state, debited and settled money', async () => {
      const res = await runOps('reconciliation.sh', [serviceDay], env);
      expect(res.code, res.stderr).to.equal(0);
      const [report] = jsonDocuments(res.stdout);
      expect(report.serviceDay).to.equal(serviceDay);
      const settled = report.states.find((s: { state: string }) => s.state === 'TAP_STATE_SETTLED');
      expect(Number(settled.tapCount)).to.be.greaterThan(0);
      expect(Number(report.settledCount)).to.be.greaterThan(0);
      expect(report.mismatchCount).to.equal('0');
    });

    plaintextOnly('refuses bad arguments before calling anything', async () => {
      const res = await runOps('unsent-taps.sh', ['lots'], env);
      expect(res.code).to.equal(2);
      expect(res.stderr).to.include('LIMIT must be a number');
    });
  });

// grpcurl is not packaged for Debian 12, so CI has only buf curl; the
// scripts' grpcurl branch is checked against a stand-in that records its
// arguments (the flags real grpcurl takes).
describe('ops scripts with grpcurl installed', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
    writeFileSync(
      join(dir, 'grpcurl'),
      `#!/usr/bin/env bash\nprintf '%s\\n' "$@" > "${dir}/args"\necho '{ "status": "SERVING" }'\n`,
      { mode: 0o755 },
    );
  });
  after(() => removeDir(dir));
  const env = (extra: NodeJS.ProcessEnv = {}) => ({ PATH: `${dir}:${process.env.PATH}`, TAPCREDIT_DATA_DIR: dir, ...extra });
  const args = () => readFileSync(join(dir, 'args'), 'utf8').trim().split('\n');

  it('uses grpcurl in plaintext when there is no ops certificate', async () => {
    const res = await runOps('health.sh', ['issuer'], env({ ISSUER_ADDRESS: '127.0.0.1:7' }));
    expect(res.stdout.trim()).to.equal('issuer 127.0.0.1:7 SERVING');
    expect(args()).to.deep.equal(['-plaintext', '-emit-defaults', '-d', '{"service": ""}', '127.0.0.1:7', 'grpc.health.v1.Health/Check']);
  });

  it('passes the ops certificate from TAPCREDIT_CERTS_DIR to grpcurl', async () => {
    await runOps('unsent-taps.sh', ['3'], env({ TAPCREDIT_CERTS_DIR: '/etc/tapcredit', TERMINAL_ADDRESS: 'gate-7:50051' }));
    expect(args()).to.deep.equal([
      '-cacert', '/etc/tapcredit/ca.pem', '-cert', '/etc/tapcredit/ops.pem', '-key', '/etc/tapcredit/ops.key',
      '-emit-defaults', '-d', '{"unsent_taps_limit": 3}', 'gate-7:50051', 'tapcredit.terminal.v1.TerminalService/GetTerminalStatus',
    ]);
  });

  it('stays in plaintext with TAPCREDIT_INSECURE=1 even when certificates are configured', async () => {
    await runOps('health.sh', ['authorizer'], env({ TAPCREDIT_CERTS_DIR: '/etc/tapcredit', TAPCREDIT_INSECURE: '1' }));
    expect(args()[0]).to.equal('-plaintext');
  });
});
