// A client in another language: Python on stubs generated from proto/ with
// Debian's protoc and gRPC plugin (.ci/run installs them). Its card emulator,
// written from docs/card-protocol.md, is checked against the protocol's test
// vectors; enroll_and_ride.py runs the whole ride against the system over
// mTLS, each step with the identity its server requires; and a plaintext run
// through a recording proxy shows the card key never travels to the terminal.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileRegistry, fromBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { expect } from 'chai';
import { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { callUnary } from '../../common/rpc.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

const root = new URL('../..', import.meta.url).pathname;
const PYTHON = '/usr/bin/python3';

function runPython(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, args, { cwd: root, timeout: 90_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const stepsOf = (stdout: string): Record<string, any> =>
  Object.fromEntries(
    stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .map((s) => [s.step, s]),
  );

/** A card image file for the Python card, personalized under the system's master key. */
function cardFile(sys: System, cardId: string): { file: string; key: Buffer } {
  const card = newCard(sys, cardId);
  const file = join(sys.dir, `${cardId}.json`);
  writeFileSync(file, JSON.stringify(CardImage.toJSON(card)));
  return { file, key: Buffer.from(card.cardKey) };
}

/** The system's development CA and the ops and phone certificates, in the layout `npm run certs` writes. */
function writeCerts(sys: System): string {
  const dir = join(sys.dir, 'certs');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'ca.pem'), sys.tls!.ops.ca);
  for (const role of ['ops', 'phone'] as const) {
    writeFileSync(join(dir, `${role}.pem`), sys.tls![role].cert);
    writeFileSync(join(dir, `${role}.key`), sys.tls![role].key);
  }
  return dir;
}

describe('Python client (clients/python)', function () {
  this.timeout(120_000);

  it('card emulator: matches the card protocol test vectors (docs/card-protocol-vectors.json)', async () => {
    const res = await runPython(['clients/python/test_card_protocol.py', '--stubs', join(tmpdir(), `tapcredit-py-stubs-${process.pid}`), '-v']);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.match(/Ran [5-9] tests/).and.include('\nOK');
  });

  describe('over mTLS, as deployed', () => {
    let sys: System;
    let logs: CapturedLogs;
    let certs: string;
    before(async () => {
      logs = captureLogs();
      sys = await startSystem({ tls: true, log: logs.log });
      certs = writeCerts(sys);
    });
    after(async () => {
      await sys?.close();
    });
    const ride = (card: string, more: string[] = []) =>
      runPython([
        'clients/python/enroll_and_ride.py',
        '--card', card,
        '--terminal', sys.terminals[0].address,
        '--issuer', sys.issuer.address,
        '--authorizer', sys.authorizer.address,
        '--certs-dir', certs,
        '--stubs', join(sys.dir, 'py-stubs'),
        ...more,
      ]);

    it('enrolls as the phone, rides through the terminal with the Python card, and sees the tap SETTLED as ops', async () => {
      const { file } = cardFile(sys, 'PYC1');
      const res = await ride(file, ['--account-id', 'py-acc-1']);
      expect(res.code, res.stderr).to.equal(0);
      const steps = stepsOf(res.stdout);

      expect(steps.account).to.deep.include({ account_id: 'py-acc-1', balance: 10000 });
      // The issuer accepted the proof the Python card computed for reader "phone".
      const { card } = await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'PYC1' });
      expect(steps.enrolled).to.deep.include({ card_id: 'PYC1', agreement_id: card!.enrollment!.agreementId });
      // The terminal took the Python card's answer to its challenge; the card file kept the counter and the flag.
      expect(steps.tap).to.deep.include({ decision: 'DECISION_ACCEPT', tap_id: 'T1:1', counter: 2 });
      const written = CardImage.fromJSON(JSON.parse(readFileSync(file, 'utf8')));
      expect([written.counter, written.creditFlag?.agreementId]).to.deep.equal(['2', card!.enrollment!.agreementId]);
      // The terminal forwarded the tap itself (the script sends no TapReport), and it was debited and settled.
      expect(steps.settled).to.deep.include({ card_state: 'CARD_STATE_ENROLLED', last_counter: 2, account_id: 'py-acc-1' });
      expect(steps.settled.taps[0]).to.deep.include({ tap_id: 'T1:1', state: 'TAP_STATE_SETTLED', charged: 200 });

      expect(steps.bad_request).to.include({ code: 'INVALID_ARGUMENT', reason: 'INVALID_ARGUMENT', domain: 'issuer.tapcredit' });
      expect(steps.bad_request.field_violations.map((v: { field: string }) => v.field)).to.include.members(['request_id', 'card']);

      // One trace through every server: the Python calls, the terminal's forward and the debit.
      const traceId = steps.trace.traceparent.split('-')[1];
      const traced = logs.lines().filter((l) => l.trace_id === traceId);
      expect(traced.map((l) => l.rpc ?? l.msg)).to.include.members(['OpenAccount', 'EnrollCard', 'AuthorizeEnrollment', 'PresentCard', 'card accepted', 'tap received', 'debit']);
    });

    it('prints a refused call as one line with the gRPC code and reason, never a traceback', async () => {
      const { file } = cardFile(sys, 'PYC2');
      const res = await ride(file, ['--account-id', 'py-acc-2', '--phone', 'not a phone']);
      expect(res.code).to.equal(1);
      expect(res.stderr).to.not.include('Traceback');
      expect(res.stderr.trim().split('\n')).to.have.length(1);
      expect(res.stderr).to.match(/^error: INVALID_ARGUMENT: .*holder\.phone_number.* \(reason INVALID_ARGUMENT\)\n$/);
    });

    it('says which certificate is missing, in one line', async () => {
      const { file } = cardFile(sys, 'PYC3');
      const res = await ride(file, ['--certs-dir', join(sys.dir, 'nowhere')]);
      expect(res.code).to.equal(1);
      expect(res.stderr).to.match(/^error: no .*nowhere\/ca\.pem: run `npm run certs`/);
      expect(res.stderr).to.not.include('Traceback');
    });
  });

  describe('the card key never reaches the terminal', () => {
    let sys: System;
    let recorder: Server | undefined;
    const toTerminal: Buffer[] = [];
    before(async () => {
      sys = await startSystem();
      // Plaintext on loopback, so the bytes the Python card sends the terminal can be read on their way.
      const [host, port] = [sys.terminals[0].address.split(':')[0], Number(sys.terminals[0].address.split(':')[1])];
      recorder = createServer((client) => {
        const upstream = connect(port, host);
        client.on('data', (chunk: Buffer) => toTerminal.push(Buffer.from(chunk)));
        client.pipe(upstream).pipe(client);
        for (const s of [client, upstream]) s.on('error', () => {});
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      await new Promise<void>((resolve) => recorder!.listen(0, '127.0.0.1', resolve));
    });
    after(async () => {
      recorder?.close();
      await sys?.close();
    });

    it('has no key field in any message a caller sends the terminal', () => {
      const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(new URL('../../gen/descriptor.binpb', import.meta.url))));
      const service = registry.getService('tapcredit.terminal.v1.TerminalService')!;
      const fields: string[] = [];
      const walk = (m: DescMessage, seen: Set<string>) => {
        if (seen.has(m.typeName)) return;
        seen.add(m.typeName);
        for (const f of m.fields) {
          fields.push(`${m.typeName}.${f.name}`);
          if (f.message) walk(f.message, seen);
        }
      };
      for (const method of service.methods) walk(method.input, new Set());
      expect(fields).to.include('tapcredit.type.v1.DebitAnswer.mac');
      expect(fields.filter((f) => /key/i.test(f))).to.deep.equal([]);
      expect(fields.some((f) => f.startsWith('tapcredit.type.v1.CardImage.'))).to.equal(false);
    });

    it('rides a Python-emulated card through the terminal; the key is in none of the bytes the terminal received', async () => {
      const { file, key } = cardFile(sys, 'PYK1');
      const res = await runPython([
        'clients/python/enroll_and_ride.py',
        '--insecure',
        '--card', file,
        '--terminal', `127.0.0.1:${(recorder!.address() as AddressInfo).port}`,
        '--issuer', sys.issuer.address,
        '--authorizer', sys.authorizer.address,
        '--stubs', join(sys.dir, 'py-stubs'),
        '--account-id', 'py-acc-k',
      ]);
      expect(res.code, res.stderr).to.equal(0);
      expect(stepsOf(res.stdout).tap).to.include({ decision: 'DECISION_ACCEPT' });
      const sent = Buffer.concat(toTerminal);
      // The recorder saw the card's answers (its id in the READ answer) ...
      expect(sent.includes(Buffer.from('PYK1'))).to.equal(true);
      // ... and never its key, in any form.
      for (const form of [key, Buffer.from(key.toString('base64')), Buffer.from(key.toString('hex'))]) expect(sent.includes(form)).to.equal(false);
    });
  });
});
