// A client in another language: Python on stubs generated from proto/ with
// Debian's protoc and gRPC plugin (.ci/run installs them), driving
// enrollment, a tap report and reads, and decoding the rich error details.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { callUnary } from '../../common/rpc.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

const root = new URL('../..', import.meta.url).pathname;
const PYTHON = '/usr/bin/python3';

function runPython(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, args, { cwd: root, timeout: 60_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('Python client (clients/python)', function () {
  this.timeout(60_000);
  let sys: System;
  let logs: CapturedLogs;
  before(async () => {
    logs = captureLogs();
    sys = await startSystem({ log: logs.log });
  });
  after(async () => {
    await sys.close();
  });

  it('computes the card MAC exactly as common/card.ts does', async () => {
    const script = [
      'import sys; sys.path.insert(0, "clients/python")',
      'import tapcredit_client as tc',
      'print(tc.card_mac(bytes(range(16)), "C-42", 7, 0, "T0001", 12345678901, bytes([9]*8)).hex())',
    ].join('\n');
    const { computeCardMac } = await import('../../common/card.js');
    const expected = computeCardMac(Buffer.from([...Array(16).keys()]), {
      cardId: 'C-42',
      counter: 7n,
      amount: 0n,
      terminalId: 'T0001',
      terminalSequence: 12345678901n,
      terminalRandom: Buffer.alloc(8, 9),
    }).toString('hex');
    const res = await runPython(['-c', script]);
    expect(res.stderr).to.equal('');
    expect(res.stdout.trim()).to.equal(expected);
  });

  it('enrolls a card, reports a tap, reads it back and decodes ErrorInfo and BadRequest', async () => {
    const cardFile = join(sys.dir, 'py-card.json');
    writeFileSync(cardFile, JSON.stringify(CardImage.toJSON(newCard(sys, 'PYC1'))));
    const res = await runPython([
      'clients/python/enroll_and_ride.py',
      '--card', cardFile,
      '--issuer', sys.issuer.address,
      '--authorizer', sys.authorizer.address,
      '--stubs', join(sys.dir, 'py-stubs'),
      '--account-id', 'py-acc-1',
    ]);
    expect(res.code, res.stderr).to.equal(0);
    const steps = Object.fromEntries(
      res.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .map((s) => [s.step, s]),
    );

    expect(steps.account).to.deep.include({ account_id: 'py-acc-1', balance: 10000 });
    // The issuer accepted the proof computed in Python: the MAC matches the card key it derives.
    expect(steps.enrolled.card_id).to.equal('PYC1');
    const { card } = await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: 'PYC1' });
    expect(steps.enrolled.agreement_id).to.equal(card!.enrollment!.agreementId);
    expect(steps.enrolled.flag).to.include({ card_id: 'PYC1', agreement_id: card!.enrollment!.agreementId });

    expect(steps.tap_report).to.include({ tap_id: 'PY1:1', status: 'TAP_REPORT_STATUS_STORED', reason: '' });
    expect(steps.read.card_state).to.equal('CARD_STATE_ENROLLED');
    expect(steps.read.last_counter).to.equal(2);
    expect(steps.read.account_id).to.equal('py-acc-1');
    expect(steps.read.taps[0].tap_id).to.equal('PY1:1');
    expect(['TAP_STATE_DEDUCTED', 'TAP_STATE_SETTLED']).to.include(steps.read.taps[0].state);
    expect(steps.read.taps[0].charged).to.equal(200);

    expect(steps.bad_request).to.include({ code: 'INVALID_ARGUMENT', reason: 'INVALID_ARGUMENT', domain: 'issuer.tapcredit' });
    const fields = steps.bad_request.field_violations.map((v: { field: string }) => v.field);
    expect(fields).to.include.members(['request_id', 'card']);
    expect(steps.bad_request.field_violations.every((v: { description: string }) => v.description !== '')).to.equal(true);

    // The Python client's traceparent reached the servers' logs: its calls and its tap are in its trace.
    const traceId = steps.trace.traceparent.split('-')[1];
    const traced = logs.lines().filter((l) => l.trace_id === traceId);
    expect(traced.map((l) => l.rpc ?? l.msg)).to.include.members(['OpenAccount', 'EnrollCard', 'AuthorizeEnrollment', 'TapReport', 'tap received', 'debit']);
  });
});
