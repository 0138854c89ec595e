// The servers' logs are JSON lines an operator can search, and they never
// hold a secret: not the issuer master key, not the flag signing key, not a
// card's key, not the rider's personal details.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { expectGrpcError, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

/** The forms a key could take in a log line. */
function encodings(bytes: Buffer): string[] {
  return [bytes.toString('hex'), bytes.toString('hex').toUpperCase(), bytes.toString('base64'), bytes.toString('base64url'), JSON.stringify([...bytes]).slice(1, -1)];
}

describe('logs', function () {
  let sys: System;
  let logs: CapturedLogs;
  beforeEach(async () => {
    logs = captureLogs();
    sys = await startSystem({ log: logs.log });
  });
  afterEach(async () => {
    await sys.close();
  });

  it('hold no key material and no personal details after enrollment, rides and refused requests', async () => {
    const r = rider(1);
    await openAccount(sys, r);
    const blank = newCard(sys, 'C1');
    const { card } = await enroll(sys, blank, r);
    const first = await tap(sys, card);
    expect(first.decision).to.equal(Decision.DECISION_ACCEPT);
    // A copy of the card with a wrong key, an expired card and a malformed one: refusals log too.
    await tap(sys, { ...first.card!, cardKey: Buffer.alloc(16, 7) });
    await tap(sys, { ...first.card!, expiresOn: '2000-01-01' });
    await expectGrpcError(tap(sys, { ...first.card!, expiresOn: 'soon' }), status.INVALID_ARGUMENT);
    await expectGrpcError(enroll(sys, newCard(sys, 'C2'), { ...r, phoneNumber: 'not a phone' }), status.INVALID_ARGUMENT);
    await waitFor(async () => {
      const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: 'C1', pageSize: 10, pageToken: '' });
      return taps[0]?.state === TapState.TAP_STATE_SETTLED;
    });

    const text = logs.text();
    expect(logs.lines().length).to.be.greaterThan(10); // every line parses as JSON
    const secrets: Record<string, Buffer> = {
      'master key': sys.masterKey,
      'signing key (pkcs8)': sys.signingKey.export({ format: 'der', type: 'pkcs8' }) as Buffer,
      'signing key (raw)': Buffer.from(sys.signingKey.export({ format: 'jwk' }).d!, 'base64url'),
      'card key': Buffer.from(blank.cardKey),
    };
    for (const [name, bytes] of Object.entries(secrets)) {
      for (const form of encodings(bytes)) expect(text.includes(form), `${name} appears in the logs as ${form}`).to.equal(false);
    }
    expect(text).to.not.include('PRIVATE KEY');
    for (const personal of [r.name, r.phoneNumber]) expect(text, 'personal details in the logs').to.not.include(personal);
    // What is there: the refusals, with their reasons.
    expect(logs.lines().some((l) => l.msg === 'card declined' && l.reason === 'DECLINE_REASON_CARD_AUTHENTICATION_FAILED')).to.equal(true);
    expect(logs.lines().some((l) => l.msg === 'rpc' && l.rpc === 'PresentCard' && l.code === 'INVALID_ARGUMENT')).to.equal(true);
  });
});
