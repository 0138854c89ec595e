// Certificate revocation: `npm run certs -- --revoke <name>` puts a
// certificate on the CRL, and a running server refuses its holder within
// seconds, without a restart; a reissued certificate works again.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createLogger } from '../../common/log.js';
import { callUnary } from '../../common/rpc.js';
import { channelCredentials, loadTls } from '../../common/tls.js';
import { IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { startIssuer, type IssuerHandle } from '../../issuer/service.js';
import { revocationList } from '../../common/pki.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { testCa, testTls } from '../helpers/pki.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { ISSUER_ID, newCard, startSystem } from '../helpers/system.js';
import { expectGrpcError, removeDir, tempDir, waitFor } from '../helpers/assert.js';

const root = new URL('../../', import.meta.url).pathname;

function certs(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'scripts/certs.ts'), ...args], { cwd: root }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('certificate revocation (npm run certs -- --revoke)', function () {
  this.timeout(90_000);
  let dir: string;
  let issuer: IssuerHandle;
  const files = (name: string) => ({ ca: join(dir, 'ca.pem'), cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) });
  const client = (name: string) => new IssuerServiceClient(issuer.address.replace('127.0.0.1', 'localhost'), channelCredentials(loadTls(files(name)), { role: 'issuer' }));
  const watchAs = async (name: string) => {
    const c = client(name);
    try {
      return await callUnary(c, c.listDenyListChanges, { fromVersion: '0', pageSize: 10 });
    } finally {
      c.close();
    }
  };

  before(async () => {
    dir = tempDir();
    expect((await certs('--certs-dir', dir, '--terminals', 'T1,T2')).code).to.equal(0);
    issuer = await startIssuer({
      issuerId: 'issuer-1',
      issuerCode: 'CITY1',
      currencyCode: 'CNY',
      databaseUrl: join(dir, 'issuer.sqlite'),
      host: '127.0.0.1',
      port: 0,
      authorizerAddress: '127.0.0.1:1',
      masterKey: randomBytes(32),
      signingKey: generateKeyPairSync('ed25519').privateKey,
      tls: loadTls(files('issuer')), // watches <dir>/crl.pem
      log: createLogger('test', undefined, 'silent'),
    });
  });
  after(async () => {
    await issuer?.close();
    removeDir(dir);
  });

  it('refuses a revoked terminal within seconds, keeps serving the others, and takes its reissued certificate', async () => {
    await watchAs('terminal-T1');
    const revoked = await certs('--certs-dir', dir, '--revoke', 'terminal-T1');
    expect(revoked.code, revoked.stderr).to.equal(0);
    expect(revoked.stdout).to.match(/revoked terminal-T1 \(serial [0-9a-f]+\)/);
    const started = Date.now();
    await waitFor(async () => {
      await expectGrpcError(watchAs('terminal-T1'), status.UNAUTHENTICATED, 'PEER_CERTIFICATE_REVOKED');
      return true;
    }, 10_000);
    expect(Date.now() - started).to.be.lessThan(10_000);
    await watchAs('terminal-T2');
    await watchAs('ops');

    // Revoking another keeps the first revoked (the list only grows).
    expect((await certs('--certs-dir', dir, '--revoke', 'terminal-T2')).code).to.equal(0);
    await waitFor(async () => {
      await expectGrpcError(watchAs('terminal-T2'), status.UNAUTHENTICATED, 'PEER_CERTIFICATE_REVOKED');
      return true;
    }, 10_000);
    await expectGrpcError(watchAs('terminal-T1'), status.UNAUTHENTICATED, 'PEER_CERTIFICATE_REVOKED');

    // A new certificate for T1 (new serial) is served again.
    expect((await certs('--certs-dir', dir, '--terminals', 'T1,T2', '--reissue')).code).to.equal(0);
    await watchAs('terminal-T1');
  });
});

describe('a revoked terminal certificate (in-process system, mTLS)', function () {
  this.timeout(90_000);

  it('can no longer report taps: they wait at the terminal, none reaches the issuer', async () => {
    const dir = tempDir();
    const crlFile = join(dir, 'crl.pem');
    const issuerTls = { ...(await testTls('issuer', ISSUER_ID)), crlFile };
    const sys = await startSystem({ tls: true, issuer: { tls: issuerTls } });
    try {
      const r = rider(61);
      await openAccount(sys, r);
      let { card } = await enroll(sys, newCard(sys, 'CV1'), r);
      card = (await tap(sys, card)).card!;
      const issuerTaps = async () => (await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'CV1', pageSize: 10, pageToken: '' })).taps.length;
      await waitFor(async () => (await issuerTaps()) === 1);

      writeFileSync(crlFile, await revocationList(await testCa(), [(await testTls('terminal', 'T1')).cert.toString('utf8')]));
      const t1 = new IssuerServiceClient(sys.issuer.address, channelCredentials(await testTls('terminal', 'T1'), { role: 'issuer' }));
      try {
        await waitFor(async () => {
          await expectGrpcError(callUnary(t1, t1.listDenyListChanges, { fromVersion: '0', pageSize: 1 }), status.UNAUTHENTICATED, 'PEER_CERTIFICATE_REVOKED');
          return true;
        }, 10_000);
      } finally {
        t1.close();
      }
      // The gate still decides offline; its forwarder is refused, so the tap waits at the terminal.
      const second = await tap(sys, card);
      expect(second.decision).to.equal(Decision.DECISION_ACCEPT);
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // many forwarder rounds
      const st = await callUnary(sys.terminalClients[0], sys.terminalClients[0].getTerminalStatus, { unsentTapsLimit: 10 });
      expect(st.unsentTapCount).to.equal('1');
      expect(st.unsentTaps[0].tapId).to.equal(second.tap!.tapId);
      expect(await issuerTaps()).to.equal(1);
    } finally {
      await sys.close();
      removeDir(dir);
    }
  });
});
