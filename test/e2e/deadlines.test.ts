// Every call one server makes to another carries a deadline: a call without
// one can hang an outbox worker forever on a peer that accepted the
// connection and never answers. Checked at run time on grpc-js itself,
// through a ride, a declined debit, a debt retry and an unenrollment (on the
// generated clients of the servers under test: sources, or dist/).

const [{ AuthorizerServiceClient, AuthorizerServiceService }, { IssuerServiceClient, IssuerServiceService }, { TerminalServiceClient, TerminalServiceService }] = await Promise.all([
  serversGenerated('authorizer'),
  serversGenerated('issuer'),
  serversGenerated('terminal'),
]);
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import * as sourceTerminal from '../../gen/tapcredit/terminal/v1/terminal.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { serversGenerated } from '../helpers/servers.js';
import { FARE, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

interface OutgoingCall {
  path: string;
  kind: 'unary' | 'server stream' | 'session';
  deadline: unknown;
}

describe('deadlines on outgoing calls', () => {
  const calls: OutgoingCall[] = [];
  const clients = [
    { client: TerminalServiceClient, definition: TerminalServiceService },
    { client: IssuerServiceClient, definition: IssuerServiceService },
    { client: AuthorizerServiceClient, definition: AuthorizerServiceService },
  ];
  // The readers of this test present cards through the sources' client; when the servers are dist's, watch that one too.
  if (sourceTerminal.TerminalServiceClient !== TerminalServiceClient) {
    clients.push({ client: sourceTerminal.TerminalServiceClient, definition: sourceTerminal.TerminalServiceService });
  }
  const originals: { prototype: Record<string, unknown>; name: string; fn: unknown }[] = [];
  let sys: System;

  const deadlineOf = (args: unknown[]) =>
    (args.find((a) => a !== null && typeof a === 'object' && 'deadline' in (a as object)) as { deadline?: unknown } | undefined)?.deadline;

  // The generated clients' methods are wrapped: every call any server (or this test) makes is seen.
  before(() => {
    for (const { client, definition } of clients) {
      const prototype = client.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
      for (const [name, method] of Object.entries(definition)) {
        const fn = prototype[name];
        originals.push({ prototype, name, fn });
        prototype[name] = function (this: unknown, ...args: unknown[]) {
          const kind = method.requestStream && method.responseStream ? 'session' : method.responseStream ? 'server stream' : 'unary';
          calls.push({ path: method.path, kind, deadline: deadlineOf(args) });
          return fn.apply(this, args);
        };
      }
    }
  });
  after(async () => {
    for (const { prototype, name, fn } of originals) prototype[name] = fn;
    await sys?.close();
  });

  it('are set on every unary call between the servers and every card session; the deny-list watch stream is the only call without one', async () => {
    sys = await startSystem();
    const paying = rider(1);
    const owing = rider(2);
    await openAccount(sys, paying);
    await openAccount(sys, owing, FARE); // one fare: the second ride is a debt
    let a = (await enroll(sys, newCard(sys, 'C1'), paying)).card;
    let b = (await enroll(sys, newCard(sys, 'C2'), owing)).card;
    for (let i = 0; i < 2; i++) {
      a = (await tap(sys, a)).card!;
      b = (await tap(sys, b)).card!;
    }
    const settledOrDeclined = async () => {
      const rows = await sys.issuer.db('taps').select('state');
      return rows.length === 4 && rows.every((r: { state: string }) => r.state === 'SETTLED' || r.state === 'DECLINED');
    };
    await waitFor(settledOrDeclined);
    await callUnary(sys.issuerClient, sys.issuerClient.retryDebts, { cardId: 'C2' });
    await callUnary(sys.issuerClient, sys.issuerClient.unenrollCard, { cardId: 'C2', accountId: owing.accountId });

    const unary = calls.filter((c) => c.kind === 'unary');
    const paths = new Set(unary.map((c) => c.path.split('/').pop()));
    for (const rpc of ['TapReport', 'Deduct', 'Settle', 'AuthorizeEnrollment', 'RevokeAgreement']) expect([...paths], 'calls seen').to.include(rpc);
    const without = unary.filter((c) => !(c.deadline instanceof Date || typeof c.deadline === 'number'));
    expect(without.map((c) => c.path), 'unary calls without a deadline').to.deep.equal([]);
    // A card at the gate (PresentCard, a session of a few messages) always has one.
    const sessions = calls.filter((c) => c.kind === 'session');
    expect(sessions.length).to.equal(4);
    expect(sessions.filter((c) => !(c.deadline instanceof Date || typeof c.deadline === 'number'))).to.deep.equal([]);
    // The watch is meant to stay open: the terminal guards it with a staleness watchdog instead (terminal/deny-list-sync.ts).
    expect([...new Set(calls.filter((c) => c.kind === 'server stream').map((c) => c.path))]).to.deep.equal(['/tapcredit.issuer.v1.IssuerService/WatchDenyList']);
  });
});
