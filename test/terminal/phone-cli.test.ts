import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { diversifyCardKey, readCardFile, verifyCreditFlag, writeCardFile } from '../../common/card.js';
import type { TerminalHandle } from '../../terminal/service.js';
import { enrolledCard, FakeIssuer, issuerKeys, masterKey, removeDir, startTestTerminal, tempDir, waitFor } from './fixtures.js';

const root = new URL('../../', import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the phone app as a rider would, in a child process (asynchronously, so in-process servers keep answering). */
function phone(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'phone/cli.ts'), ...args], { cwd: root, env: { ...process.env, LOG_LEVEL: 'silent' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('phone app CLI', function () {
  this.timeout(60_000);
  let dir: string;
  let keyFile: string;

  beforeEach(() => {
    dir = tempDir();
    keyFile = join(dir, 'master.key');
    writeFileSync(keyFile, masterKey.toString('hex'));
  });
  afterEach(() => removeDir(dir));

  it('card issue personalizes a card under the master key; card show prints it with the key masked', async () => {
    const file = join(dir, 'card.json');
    const issued = await phone('card', 'issue', '--card-id', 'C100', '--out', file, '--expires-on', '2031-06-30', '--master-key-file', keyFile);
    expect(issued.code, issued.stderr).to.equal(0);

    const card = readCardFile(file);
    expect(card).to.deep.include({ cardId: 'C100', issuerCode: 'CITY1', expiresOn: '2031-06-30', counter: '0', creditFlag: undefined });
    expect(card.cardKey.equals(diversifyCardKey(masterKey, 'C100'))).to.equal(true);

    const shown = await phone('card', 'show', file);
    expect(shown.code, shown.stderr).to.equal(0);
    const printed = JSON.parse(shown.stdout);
    expect(printed.creditFlagPresent).to.equal(false);
    expect(printed.card).to.deep.include({ cardId: 'C100', expiresOn: '2031-06-30', counter: '0', cardKey: '<masked>' });
    expect(shown.stdout).to.not.include(card.cardKey.toString('base64'));
  });

  it('card issue defaults to the CITY1 issuer and an expiry four years ahead', async () => {
    const file = join(dir, 'card.json');
    expect((await phone('card', 'issue', '--card-id', 'C101', '--out', file, '--master-key-file', keyFile)).code).to.equal(0);
    const card = readCardFile(file);
    expect(card.issuerCode).to.equal('CITY1');
    expect(card.expiresOn.slice(0, 4)).to.equal(String(new Date().getUTCFullYear() + 4));
  });

  it('enroll writes the issuer-signed flag into the card; tap then opens the gate and writes the card back', async () => {
    const issuer = await new FakeIssuer().start();
    let terminal: TerminalHandle | undefined;
    try {
      terminal = await startTestTerminal(dir, issuer.address);
      const file = join(dir, 'card.json');
      await phone('card', 'issue', '--card-id', 'C200', '--out', file, '--master-key-file', keyFile);

      const enrolled = await phone('enroll', '--card', file, '--name', 'Li Lei', '--phone', '+8613800138000', '--account', 'acc_1', '--request-id', 'req-1', '--issuer', issuer.address, '--insecure');
      expect(enrolled.code, enrolled.stderr).to.equal(0);
      expect(JSON.parse(enrolled.stdout).enrollment).to.deep.include({ cardId: 'C200', accountId: 'acc_1', agreementId: 'agr_C200' });
      const request = issuer.enrollments[0];
      expect(request).to.deep.include({ requestId: 'req-1', accountId: 'acc_1' });
      expect(request.rider).to.deep.equal({ name: 'Li Lei', phoneNumber: '+8613800138000' });
      expect(request.card!.proof).to.deep.include({ cardId: 'C200', counter: '1', terminalId: 'phone', terminalSequence: '0' });
      const card = readCardFile(file);
      expect(card.counter).to.equal('1');
      expect(verifyCreditFlag(issuerKeys.publicKey, card.creditFlag!)).to.equal(true);
      expect(JSON.parse((await phone('card', 'show', file)).stdout).creditFlagPresent).to.equal(true);

      const tapped = await phone('tap', '--card', file, '--terminal', terminal.address, '--insecure');
      expect(tapped.code, tapped.stderr).to.equal(0);
      expect(JSON.parse(tapped.stdout)).to.deep.equal({ decision: 'DECISION_ACCEPT', fare: { currencyCode: 'CNY', minorUnits: '200' }, tapId: 'T1:1' });
      expect(readCardFile(file).counter).to.equal('2');
      await waitFor(() => issuer.stored.has('T1:1'));
    } finally {
      await terminal?.close();
      issuer.stop();
    }
  });

  it('tap prints a decline with its reason and writes the card back with the counter it advanced', async () => {
    const issuer = await new FakeIssuer().start();
    const terminal = await startTestTerminal(dir, issuer.address);
    try {
      // A card personalized under another master key, carrying a genuine flag: its MAC fails at the gate.
      const otherKeyFile = join(dir, 'other.key');
      writeFileSync(otherKeyFile, randomBytes(32).toString('hex'));
      const file = join(dir, 'card.json');
      await phone('card', 'issue', '--card-id', 'C300', '--out', file, '--master-key-file', otherKeyFile);
      writeCardFile(file, { ...readCardFile(file), creditFlag: enrolledCard('C300').creditFlag });

      const tapped = await phone('tap', '--card', file, '--terminal', terminal.address, '--insecure');
      expect(tapped.code, tapped.stderr).to.equal(0);
      expect(JSON.parse(tapped.stdout)).to.deep.equal({ decision: 'DECISION_DECLINE', declineReason: 'DECLINE_REASON_CARD_AUTHENTICATION_FAILED' });
      expect(readCardFile(file).counter).to.equal('1');
    } finally {
      await terminal.close();
      issuer.stop();
    }
  });

  it('prints the gRPC code, message and reason of a refused call and exits 1', async () => {
    const issuer = await new FakeIssuer().start();
    const terminal = await startTestTerminal(dir, issuer.address);
    try {
      const file = join(dir, 'card.json');
      await phone('card', 'issue', '--card-id', 'C400', '--out', file, '--master-key-file', keyFile);
      writeCardFile(file, { ...readCardFile(file), expiresOn: 'someday' });
      const tapped = await phone('tap', '--card', file, '--terminal', terminal.address, '--insecure');
      expect(tapped.code).to.equal(1);
      expect(tapped.stderr).to.include('INVALID_ARGUMENT').and.include('reason: INVALID_ARGUMENT').and.include('answer.read.expires_on');
      expect(readFileSync(file, 'utf8')).to.include('someday');
    } finally {
      await terminal.close();
      issuer.stop();
    }
  });
});
