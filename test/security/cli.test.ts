// The phone app CLI over mTLS with its own certificate, and its refusal of
// plaintext anywhere but loopback.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { readCardFile } from '../../common/card.js';
import { testTls } from '../helpers/pki.js';
import { openAccount, rider } from '../helpers/rider.js';
import { startSystem, type System } from '../helpers/system.js';

const root = new URL('../../', import.meta.url).pathname;

function phone(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'phone/cli.ts'), ...args], { cwd: root, env: { ...process.env, LOG_LEVEL: 'silent' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('phone app CLI over mTLS', function () {
  this.timeout(60_000);
  let sys: System;
  let certs: string;
  let cardFile: string;

  before(async () => {
    sys = await startSystem({ tls: true });
    certs = join(sys.dir, 'certs');
    mkdirSync(certs);
    const tls = await testTls('phone', 'phone-app');
    writeFileSync(join(certs, 'ca.pem'), tls.ca);
    writeFileSync(join(certs, 'phone.pem'), tls.cert);
    writeFileSync(join(certs, 'phone.key'), tls.key, { mode: 0o600 });
    const keyFile = join(sys.dir, 'master.key');
    writeFileSync(keyFile, sys.masterKey.toString('hex'));
    cardFile = join(sys.dir, 'card.json');
    const issued = await phone('card', 'issue', '--card-id', 'C1', '--out', cardFile, '--master-key-file', keyFile);
    expect(issued.code, issued.stderr).to.equal(0);
    await openAccount(sys, rider(1));
  });
  after(async () => {
    await sys.close();
  });

  it('enrolls and taps with the phone certificate from --certs-dir', async () => {
    const r = rider(1);
    const enrolled = await phone('enroll', '--card', cardFile, '--name', r.name, '--phone', r.phoneNumber, '--account', r.accountId, '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(enrolled.code, enrolled.stderr).to.equal(0);
    expect(readCardFile(cardFile).creditFlag?.cardId).to.equal('C1');
    const tapped = await phone('tap', '--card', cardFile, '--terminal', sys.terminals[0].address, '--certs-dir', certs);
    expect(tapped.code, tapped.stderr).to.equal(0);
    expect(JSON.parse(tapped.stdout).decision).to.equal('DECISION_ACCEPT');
  });

  it('without certificates says how to get them, and leaves the card untouched', async () => {
    const before = readFileSync(cardFile, 'utf8');
    const r = rider(1);
    const run = await phone('enroll', '--card', cardFile, '--name', r.name, '--phone', r.phoneNumber, '--account', r.accountId, '--issuer', sys.issuer.address, '--certs-dir', join(sys.dir, 'none'));
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include('npm run certs');
    expect(readFileSync(cardFile, 'utf8')).to.equal(before);
  });

  it('refuses --insecure towards an address that is not loopback', async () => {
    const run = await phone('tap', '--card', cardFile, '--terminal', '192.0.2.10:50051', '--insecure');
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include('only allowed on loopback');
  });
});
