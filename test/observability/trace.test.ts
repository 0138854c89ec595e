// One tap followed by its trace id through the logs of every hop: the gate
// (terminal), the tap report (issuer), the debit (authorizer) and the
// settlement (issuer), with the W3C traceparent carried in gRPC metadata and
// in each tap of a batch.
import { expect } from 'chai';
import { newTerminalRandom, zeroAmountDebit } from '../../common/card.js';
import { callUnary } from '../../common/rpc.js';
import { formatTraceparent, newSpan, runInSpan } from '../../common/trace.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { FARE, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

describe('tracing across the hops', function () {
  let sys: System;
  let logs: CapturedLogs;
  beforeEach(async () => {
    logs = captureLogs();
    sys = await startSystem({ log: logs.log });
  });
  afterEach(async () => {
    await sys.close();
  });

  it('follows one tap terminal -> issuer -> authorizer -> issuer by its trace id', async () => {
    const r = rider(1);
    await openAccount(sys, r);
    const { card } = await enroll(sys, newCard(sys, 'C1'), r);
    const gate = newSpan();
    const presented = await runInSpan(gate, () => tap(sys, card));
    expect(presented.decision).to.equal(Decision.DECISION_ACCEPT);
    const tapId = presented.tap!.tapId;
    await waitFor(async () => {
      const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C1', pageSize: 10, pageToken: '' });
      return taps[0]?.state === TapState.TAP_STATE_SETTLED;
    });
    // The tap carries the traceparent of the call that accepted it: a child of the gate's span.
    expect(presented.tap!.traceparent).to.match(new RegExp(`^00-${gate.traceId}-[0-9a-f]{16}-01$`));

    const trail = logs.lines().filter((l) => l.trace_id === gate.traceId);
    const steps = trail.map((l) => `${l.msg}${l.rpc ? ` ${l.rpc}` : ''}`);
    const at = (step: string) => {
      const i = steps.indexOf(step);
      expect(i, `"${step}" in the trace, which has: ${steps.join(' | ')}`).to.be.greaterThan(-1);
      return trail[i];
    };
    // The gate, then the hops in causal order.
    const accepted = at('card accepted');
    expect(accepted.tapId).to.equal(tapId);
    expect(at('rpc PresentCard')).to.include({ service: 'TerminalService', code: 'OK' });
    const received = at('tap received');
    expect(received).to.include({ tapId, status: 'TAP_REPORT_STATUS_STORED' });
    const debit = at('debit');
    expect(debit).to.include({ requestId: tapId, status: 'DEBITED' });
    const settled = at('tap settled');
    expect(settled).to.include({ tapId, status: 'SETTLEMENT_ITEM_STATUS_MATCHED' });
    expect(trail.indexOf(accepted)).to.be.lessThan(trail.indexOf(received));
    expect(trail.indexOf(received)).to.be.lessThan(trail.indexOf(debit));
    expect(trail.indexOf(debit)).to.be.lessThan(trail.indexOf(settled));
    // A batch of one tap is sent within that tap's trace: the calls themselves join it.
    expect(at('rpc TapReport')).to.include({ service: 'IssuerService', code: 'OK', taps: 1 });
    expect(at('rpc Deduct')).to.include({ service: 'AuthorizerService', code: 'OK', items: 1 });
    // The servers name their parts of the trace: the terminal, issuer and authorizer loggers all appear.
    expect(new Set(trail.map((l) => l.terminalId ?? l.authorizerId ?? 'issuer'))).to.have.keys('T1', 'authorizer-1', 'issuer');
  });

  it('keeps each tap of a batch in its own trace through the issuer and the authorizer', async () => {
    const r = rider(5);
    await openAccount(sys, r);
    let { card } = await enroll(sys, newCard(sys, 'C5'), r);
    const spans = [newSpan(), newSpan()];
    const taps = spans.map((span, i) => {
      const read = zeroAmountDebit(card, { terminalId: 'T9', terminalSequence: BigInt(i + 1), terminalRandom: newTerminalRandom() });
      card = read.card;
      return {
        tapId: `T9:${i + 1}`,
        terminalId: 'T9',
        terminalSequence: String(i + 1),
        cardId: 'C5',
        agreementId: card.creditFlag!.agreementId,
        fare: money(FARE),
        tappedAt: new Date(),
        proof: read.proof,
        traceparent: formatTraceparent(span),
      };
    });
    const report = newSpan();
    await runInSpan(report, () => callUnary(sys.issuerClient, sys.issuerClient.tapReport, { terminalId: 'T9', taps }));
    await waitFor(async () => {
      const { taps: held } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C5', pageSize: 10, pageToken: '' });
      return held.length === 2 && held.every((t) => t.state === TapState.TAP_STATE_SETTLED);
    });
    for (const [i, span] of spans.entries()) {
      const trail = logs.lines().filter((l) => l.trace_id === span.traceId);
      expect(trail.map((l) => l.msg), `trace of tap ${i + 1}`).to.include.members(['tap received', 'tap debit answered', 'debit', 'tap settled']);
      // Every per-tap line in this trace is about this tap (the batch calls may join the first tap's trace).
      const perTap = trail.filter((l) => l.msg !== 'rpc');
      expect(perTap.map((l) => l.tapId ?? l.requestId)).to.deep.equal(perTap.map(() => `T9:${i + 1}`));
    }
    // The report call itself is in the caller's trace, not in the taps'.
    expect(logs.lines().find((l) => l.msg === 'rpc' && l.rpc === 'TapReport')?.trace_id).to.equal(report.traceId);
  });

  it('follows a debt retried on schedule under the trace of its tap', async () => {
    await sys.close();
    logs = captureLogs();
    sys = await startSystem({ log: logs.log, issuer: { debtRetry: { baseMs: 200, maxMs: 200 }, debtPollIntervalMs: 50 } });
    const r = rider(3);
    await openAccount(sys, r, FARE); // one ride: the second one's debit declines
    const first = await tap(sys, (await enroll(sys, newCard(sys, 'C3'), r)).card);
    await waitFor(() => logs.lines().some((l) => l.msg === 'debit' && l.requestId === first.tap!.tapId));
    const gate = newSpan();
    const presented = await runInSpan(gate, () => tap(sys, first.card!));
    const tapId = presented.tap!.tapId;
    await waitFor(() => logs.lines().some((l) => l.trace_id === gate.traceId && l.msg === 'tap debt retry answered'));
    await callUnary(sys.authorizerClient, sys.authorizerClient.topUp, { requestId: 'top-up-c3', accountId: r.accountId, amount: money(FARE) });
    await waitFor(() => logs.lines().some((l) => l.trace_id === gate.traceId && l.msg === 'tap debt retry answered' && l.state === 'DEBITED'), 10_000);

    const trail = logs.lines().filter((l) => l.trace_id === gate.traceId);
    // The first debit declined, then the retries: each seen at the issuer and at the authorizer, under the tap's trace.
    expect(trail.find((l) => l.msg === 'debit' && l.requestId === tapId)).to.include({ status: 'DECLINED' });
    const retries = trail.filter((l) => l.msg === 'tap debt retry answered');
    expect(retries.every((l) => l.tapId === tapId && String(l.requestId).startsWith(`${tapId}:r`))).to.equal(true);
    expect(retries.at(-1)).to.include({ state: 'DEBITED' });
    expect(trail.find((l) => l.msg === 'debit' && l.requestId === retries.at(-1)!.requestId)).to.include({ status: 'DEBITED' });
  });

  it('continues the caller\'s trace on a synchronous hop (EnrollCard -> AuthorizeEnrollment)', async () => {
    const r = rider(2);
    await openAccount(sys, r);
    const phone = newSpan();
    await runInSpan(phone, () => enroll(sys, newCard(sys, 'C2'), r));
    const rpcs = logs.lines().filter((l) => l.trace_id === phone.traceId && l.msg === 'rpc');
    expect(rpcs.map((l) => l.rpc)).to.deep.equal(['AuthorizeEnrollment', 'EnrollCard']);
    // Each hop is a new span of the same trace.
    expect(new Set(rpcs.map((l) => l.span_id)).size).to.equal(2);
  });

  it('starts a new trace when the caller sends none or a malformed traceparent', async () => {
    const r = rider(3);
    await openAccount(sys, r);
    const { Metadata } = await import('@grpc/grpc-js');
    const md = new Metadata();
    md.set('traceparent', '00-00000000000000000000000000000000-0000000000000000-01');
    await new Promise<void>((resolve, reject) =>
      sys.authorizerClient.getAccount({ accountId: r.accountId }, md, (err) => (err ? reject(err) : resolve())),
    );
    const line = logs.lines().find((l) => l.msg === 'rpc' && l.rpc === 'GetAccount');
    expect(line?.trace_id).to.match(/^[0-9a-f]{32}$/);
    expect(line?.trace_id).to.not.match(/^0+$/);
  });

  it('logs every RPC as one JSON line with rpc, peer, ids, code and duration', async () => {
    const r = rider(4);
    await openAccount(sys, r);
    const line = logs.lines().find((l) => l.msg === 'rpc' && l.rpc === 'OpenAccount');
    expect(line).to.include({ service: 'AuthorizerService', code: 'OK', account_id: r.accountId });
    expect(line!.peer).to.match(/127\.0\.0\.1:\d+$/);
    expect(line!.duration_ms).to.be.a('number');
    expect(line!.trace_id).to.match(/^[0-9a-f]{32}$/);
  });
});
