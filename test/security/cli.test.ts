// The phone app CLI over mTLS with its own certificate, and its refusal of
// plaintext anywhere but loopback.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { readCardFile } from '../../common/card.js';
import { testTls } from '../helpers/pki.js';
import { callUnary } from '../../common/rpc.js';
import { openAccount, passwordOf, rider } from '../helpers/rider.js';
import { startSystem, type System } from '../helpers/system.js';

const root = new URL('../../', import.meta.url).pathname;

let sessionFile = '';

function phone(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, LOG_LEVEL: 'silent', TAPCREDIT_PHONE_SESSION: sessionFile, TAPCREDIT_RIDER_PASSWORD: passwordOf(rider(1)) };
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'phone/cli.ts'), ...args], { cwd: root, env }, (err, stdout, stderr) =>
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
    sessionFile = join(sys.dir, 'phone-session.json');
    // Ops sets the rider's password (as at a service desk).
    await callUnary(sys.authorizerClient, sys.authorizerClient.setRiderPassword, { accountId: rider(1).accountId, newPassword: passwordOf(rider(1)), currentPassword: '' });
  });
  after(async () => {
    await sys.close();
  });

  it('refuses a rider command before sign-in, leaving the card untouched', async () => {
    const before = readFileSync(cardFile, 'utf8');
    const r = rider(1);
    const run = await phone('enroll', '--card', cardFile, '--name', r.name, '--phone', r.phoneNumber, '--account', r.accountId, '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include('sign in first');
    expect(readFileSync(cardFile, 'utf8')).to.equal(before);
  });

  it('signs in at the authorizer (a wrong password is refused) and keeps the tokens in a private file', async () => {
    const wrong = join(sys.dir, 'wrong-password');
    writeFileSync(wrong, 'not the password at all\n');
    const refused = await phone('sign-in', '--account', rider(1).accountId, '--password-file', wrong, '--authorizer', sys.authorizer.address, '--certs-dir', certs);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.include('SIGN_IN_FAILED');
    const run = await phone('sign-in', '--account', rider(1).accountId, '--authorizer', sys.authorizer.address, '--certs-dir', certs);
    expect(run.code, run.stderr).to.equal(0);
    expect(JSON.parse(run.stdout).signedIn).to.equal(rider(1).accountId);
    expect(statSync(sessionFile).mode & 0o777).to.equal(0o600);
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

  it('refreshes an expiring token before a rider command; reads, retries, unenrolls; signs out', async () => {
    const session = JSON.parse(readFileSync(sessionFile, 'utf8'));
    writeFileSync(sessionFile, JSON.stringify({ ...session, accessTokenExpiresAt: new Date().toISOString() }), { mode: 0o600 });
    const history = await phone('history', '--card-id', 'C1', '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(history.code, history.stderr).to.equal(0);
    const refreshed = JSON.parse(readFileSync(sessionFile, 'utf8'));
    expect(refreshed.refreshToken).to.not.equal(session.refreshToken);
    expect(Date.parse(refreshed.accessTokenExpiresAt)).to.be.greaterThan(Date.now() + 60_000);
    // Another rider's card, or none: the same NOT_FOUND.
    const other = await phone('history', '--card-id', 'C999', '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(other.code).to.equal(1);
    expect(other.stderr).to.include('CARD_NOT_FOUND');
    const retried = await phone('retry-debts', '--card-id', 'C1', '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(retried.code, retried.stderr).to.equal(0);
    const unenrolled = await phone('unenroll', '--card-id', 'C1', '--account', rider(1).accountId, '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(unenrolled.code, unenrolled.stderr).to.equal(0);
    const lost = await phone('lost', '--card-id', 'C1', '--account', rider(1).accountId, '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(lost.code, lost.stderr).to.equal(0);
    const out = await phone('sign-out', '--certs-dir', certs);
    expect(out.code, out.stderr).to.equal(0);
    expect(existsSync(sessionFile)).to.equal(false);
    const after = await phone('history', '--card-id', 'C1', '--issuer', sys.issuer.address, '--certs-dir', certs);
    expect(after.stderr).to.include('sign in first');
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
