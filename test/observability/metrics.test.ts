// Every server serves Prometheus metrics over HTTP: RPCs by method and code
// with latency histograms, the depth and age of each outbox, the deny-list
// version a terminal holds, debits by outcome and the settlement lag.
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import { DenyListReason, TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { FARE, ISSUER_ID, expectGrpcError, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

async function scrape(address: string | undefined): Promise<string> {
  expect(address, 'the server serves metrics').to.be.a('string');
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).to.equal(200);
  expect(res.headers.get('content-type')).to.match(/^text\/plain/);
  return res.text();
}

/** The value of one sample, e.g. value(text, 'grpc_server_handled_total', { grpc_method: 'PresentCard' }); undefined when absent. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const TERMINAL = 'tapcredit.terminal.v1.TerminalService';
const ISSUER = 'tapcredit.issuer.v1.IssuerService';
const AUTHORIZER = 'tapcredit.authorizer.v1.AuthorizerService';

describe('metrics', function () {
  let sys: System;
  beforeEach(async () => {
    sys = await startSystem({ metrics: true });
  });
  afterEach(async () => {
    await sys.close();
  });

  it('count RPCs by method and code with latency histograms, and debits by outcome', async () => {
    const paying = rider(1);
    const broke = rider(2);
    await openAccount(sys, paying);
    await openAccount(sys, broke, FARE / 2n); // enough to enroll, not to pay a fare
    const { card } = await enroll(sys, newCard(sys, 'C1'), paying);
    const { card: card2 } = await enroll(sys, newCard(sys, 'C2'), broke);
    expect((await tap(sys, card)).decision).to.equal(Decision.DECISION_ACCEPT);
    expect((await tap(sys, card2)).decision).to.equal(Decision.DECISION_ACCEPT);
    await expectGrpcError(tap(sys, { ...card, expiresOn: 'soon' }), 3);
    const stateOf = async (cardId: string) =>
      (await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId, pageSize: 10, pageToken: '' })).taps[0]?.state;
    await waitFor(async () => (await stateOf('C1')) === TapState.TAP_STATE_SETTLED && ![undefined, TapState.TAP_STATE_RECEIVED, TapState.TAP_STATE_DEDUCTING].includes(await stateOf('C2')));

    const terminal = await scrape(sys.terminals[0].metricsAddress);
    expect(value(terminal, 'grpc_server_handled_total', { grpc_service: TERMINAL, grpc_method: 'PresentCard', grpc_code: 'OK' })).to.equal(2);
    expect(value(terminal, 'grpc_server_handled_total', { grpc_method: 'PresentCard', grpc_code: 'INVALID_ARGUMENT' })).to.equal(1);
    expect(value(terminal, 'grpc_server_handling_seconds_count', { grpc_method: 'PresentCard', grpc_code: 'OK' })).to.equal(2);
    expect(value(terminal, 'grpc_server_handling_seconds_bucket', { grpc_method: 'PresentCard', grpc_code: 'OK', le: '+Inf' })).to.equal(2);
    expect(value(terminal, 'grpc_server_started_total', { grpc_method: 'PresentCard' })).to.equal(3);
    expect(value(terminal, 'tapcredit_terminal_unsent_taps')).to.equal(0);
    expect(value(terminal, 'tapcredit_terminal_oldest_unsent_tap_age_seconds')).to.equal(0);
    expect(value(terminal, 'tapcredit_database_up')).to.equal(1);
    expect(value(terminal, 'process_cpu_seconds_total')).to.be.a('number');

    const issuer = await scrape(sys.issuer.metricsAddress);
    expect(value(issuer, 'grpc_server_handled_total', { grpc_service: ISSUER, grpc_method: 'EnrollCard', grpc_code: 'OK' })).to.equal(2);
    expect(value(issuer, 'grpc_server_handled_total', { grpc_method: 'TapReport', grpc_code: 'OK' })).to.be.greaterThan(0);
    expect(value(issuer, 'grpc_server_handled_total', { grpc_method: 'Settle', grpc_code: 'OK' })).to.be.greaterThan(0);
    expect(value(issuer, 'tapcredit_issuer_taps_awaiting_debit')).to.equal(0);
    expect(value(issuer, 'tapcredit_issuer_taps_awaiting_settlement')).to.equal(0);
    expect(value(issuer, 'tapcredit_issuer_settlement_lag_seconds')).to.equal(0);

    const authorizer = await scrape(sys.authorizer.metricsAddress);
    expect(value(authorizer, 'grpc_server_handled_total', { grpc_service: AUTHORIZER, grpc_method: 'OpenAccount', grpc_code: 'OK' })).to.equal(2);
    expect(value(authorizer, 'tapcredit_authorizer_debits_total', { outcome: 'debited', reason: '' })).to.equal(1);
    expect(value(authorizer, 'tapcredit_authorizer_debits_total', { outcome: 'declined', reason: 'INSUFFICIENT_FUNDS' })).to.be.greaterThan(0);
    expect(value(authorizer, 'tapcredit_authorizer_unsettled_debits')).to.equal(0);
    expect(value(authorizer, 'tapcredit_authorizer_settlement_lag_seconds')).to.equal(0);
    // Servers in one process keep their numbers apart.
    expect(value(authorizer, 'grpc_server_handled_total', { grpc_method: 'PresentCard' })).to.equal(undefined);
  });

  it('show the deny-list version each terminal holds, as it syncs from the issuer', async () => {
    expect(value(await scrape(sys.terminals[0].metricsAddress), 'tapcredit_terminal_deny_list_version')).to.equal(0);
    for (const cardId of ['LOST-1', 'LOST-2']) {
      await callUnary(sys.issuerClient, sys.issuerClient.addToDenyList, { cardId, reason: DenyListReason.DENY_LIST_REASON_LOST });
    }
    await waitFor(async () => {
      const terminal = await scrape(sys.terminals[0].metricsAddress);
      return value(terminal, 'tapcredit_terminal_deny_list_version') === 2 && value(terminal, 'tapcredit_terminal_deny_list_size') === 2;
    });
  });

  it('show taps waiting at the terminal and debits waiting for settlement while the issuer is down', async () => {
    const r = rider(3);
    await openAccount(sys, r);
    const { card, response } = await enroll(sys, newCard(sys, 'C3'), r);
    await sys.issuer.close();
    expect((await tap(sys, card)).decision).to.equal(Decision.DECISION_ACCEPT);
    // The issuer's debit request, sent by hand: the fare is debited but cannot be settled.
    await callUnary(sys.authorizerClient, sys.authorizerClient.deduct, {
      issuerId: ISSUER_ID,
      items: [{ requestId: 'T7:1', agreementId: response.enrollment!.agreementId, amount: money(FARE), tappedAt: new Date() }],
    });

    await waitFor(async () => {
      const terminal = await scrape(sys.terminals[0].metricsAddress);
      return value(terminal, 'tapcredit_terminal_unsent_taps') === 1 && value(terminal, 'tapcredit_terminal_oldest_unsent_tap_age_seconds')! > 0;
    });
    await waitFor(async () => {
      const authorizer = await scrape(sys.authorizer.metricsAddress);
      return (
        value(authorizer, 'tapcredit_authorizer_unsettled_debits') === 1 &&
        value(authorizer, 'tapcredit_authorizer_settlement_lag_seconds')! > 0 &&
        value(authorizer, 'tapcredit_authorizer_pending_settlements') === 1
      );
    });
  });

  it('show taps waiting at the issuer for their debit while the authorizer is down', async () => {
    const r = rider(4);
    await openAccount(sys, r);
    const { card } = await enroll(sys, newCard(sys, 'C4'), r);
    await sys.authorizer.close();
    expect((await tap(sys, card)).decision).to.equal(Decision.DECISION_ACCEPT);
    await waitFor(async () => {
      const issuer = await scrape(sys.issuer.metricsAddress);
      return value(issuer, 'tapcredit_issuer_taps_awaiting_debit') === 1 && value(issuer, 'tapcredit_issuer_oldest_tap_awaiting_debit_age_seconds')! > 0;
    });
    expect(value(await scrape(sys.terminals[0].metricsAddress), 'tapcredit_terminal_unsent_taps')).to.equal(0);
  });
});
