// No secret reaches a log: the logs of a whole ride over mTLS (at debug
// level, refusals and declines included) hold no master key, signing key,
// card key, TLS private key, nor the rider's phone number.
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { diversifyCardKey } from '../../common/card.js';
import { createLogger } from '../../common/log.js';
import { callUnary } from '../../common/rpc.js';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { testTls } from '../helpers/pki.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { ISSUER_ID, expectGrpcError, newCard, startSystem, waitFor } from '../helpers/system.js';

/** The ways a secret can show up in a JSON log line: hex, base64 (url), a Buffer's byte array, a PEM body. */
function spellings(secret: Buffer): string[] {
  return [
    secret.toString('hex'),
    secret.toString('hex').toUpperCase(),
    secret.toString('base64').replace(/=+$/, ''),
    secret.toString('base64url'),
    `"data":[${[...secret].join(',')}]`,
  ].map((s) => s.slice(0, 24)); // a prefix is enough to find a leak, and also catches a cut one
}

/** The base64 body of a PEM: any 32-character run of it in a log would be a leak. */
const pemBody = (pem: Buffer | string) => pem.toString().replace(/-----[^-]+-----|\s/g, '').slice(0, 32);

/** A debug-level logger whose lines are kept in memory. */
function capturedLogger() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const log = createLogger('test', sink);
  log.level = 'debug';
  return { log, lines };
}

/** The secrets (by name) any of whose spellings occur in text. */
const leaksIn = (text: string, secrets: Record<string, string[]>) =>
  Object.entries(secrets).flatMap(([what, forms]) => forms.filter((f) => text.includes(f)).map((f) => `${what} (${f})`));

describe('secrets in logs', function () {
  this.timeout(60_000);

  it('the check finds a key logged the way a careless line would log it (so it can fail)', () => {
    const { log, lines } = capturedLogger();
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    log.info({ card: { secret: key } }, 'card read');
    log.info({ secretHex: key.toString('hex') }, 'card read');
    expect(leaksIn(lines.join(''), { key: spellings(key) })).to.have.length(2);
  });

  it('censors fields named like secrets or personal details, should a log call pass one', () => {
    const { log, lines } = capturedLogger();
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    log.info({ masterKey: key, config: { signingKey: key, tls: { key } }, req: { rider: { name: 'Li Lei', phoneNumber: '+8613800138000' } } }, 'careless');
    const text = lines.join('');
    expect(leaksIn(text, { key: spellings(key), phone: ['+8613800138000'] })).to.deep.equal([]);
    expect(text).to.include('[redacted]');
  });

  it('a whole ride over mTLS logs no key material and no rider phone number', async () => {
    const { log, lines } = capturedLogger();
    const sys = await startSystem({ tls: true, log });
    const r = rider(40);
    const cards = ['C40', 'C41'];
    try {
      await openAccount(sys, r, 1_000n);
      let { card } = await enroll(sys, newCard(sys, cards[0]), r);
      for (let i = 0; i < 3; i++) card = (await tap(sys, card)).card!;
      // A declined card (no flag), a refused call and a bad request also log.
      await tap(sys, newCard(sys, cards[1]));
      const asPhone = sys.phone.issuerClient;
      await expectGrpcError(callUnary(asPhone, asPhone.tapReport, { terminalId: 'T1', taps: [] }), 7);
      await expectGrpcError(callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: '' }), 3);
      await waitFor(async () => {
        const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: cards[0], pageSize: 10, pageToken: '' });
        return taps.length === 3 && taps.every((x) => x.state === TapState.TAP_STATE_SETTLED);
      });
    } finally {
      await sys.close();
    }

    const text = lines.join('');
    expect(lines.length, 'the ride should have logged').to.be.greaterThan(10);
    expect(text).to.include('rpc refused by access policy');

    const signingKeyDer = sys.signingKey.export({ type: 'pkcs8', format: 'der' });
    const signingSeed = Buffer.from(sys.signingKey.export({ format: 'jwk' }).d!, 'base64url');
    const secrets: Record<string, string[]> = {
      'master key': spellings(sys.masterKey),
      'signing key (PKCS#8)': [pemBody(signingKeyDer.toString('base64'))],
      'signing key (seed)': spellings(signingSeed),
    };
    for (const id of cards) secrets[`card key of ${id}`] = spellings(diversifyCardKey(sys.masterKey, id));
    for (const [role, name] of [['issuer', ISSUER_ID], ['authorizer', 'authorizer-1'], ['terminal', 'T1'], ['ops', 'admin'], ['phone', 'phone-app']] as const) {
      secrets[`TLS key of ${role}`] = [pemBody((await testTls(role, name)).key)];
    }
    secrets['rider phone number'] = [r.phoneNumber, r.phoneNumber.slice(1)];

    expect(leaksIn(text, secrets)).to.deep.equal([]);
  });
});
