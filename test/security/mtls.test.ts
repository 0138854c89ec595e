// mTLS between every server and client, and authorization by the identity in
// the caller's certificate: who may call what, and only in its own name.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, credentials, status, type ChannelCredentials } from '@grpc/grpc-js';
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import { clientCredentials, type TlsConfig } from '../../common/tls.js';
import { createCa } from '../../common/pki.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { DenyListReason, IssuerServiceClient, TapReportStatus } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { DeclineReason, TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { tapOf } from '../issuer/fixtures.js';
import { testCa, testTls, tlsFrom } from '../helpers/pki.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { expectGrpcError, money, newCard, startSystem, tableCounts, waitFor, ISSUER_ID, type System } from '../helpers/system.js';

const run = promisify(execFile);
const BUF = new URL('../../node_modules/.bin/buf', import.meta.url).pathname;

describe('mTLS and access by peer identity', function () {
  this.timeout(60_000);
  let sys: System;
  const clients: { close(): void }[] = [];
  // A card enrolled once; its agreement makes the hand-made taps below valid.
  let card: ReturnType<typeof newCard>;
  let agreementId: string;

  before(async () => {
    sys = await startSystem({ tls: true, terminals: 2 });
    const r = rider(1);
    await openAccount(sys, r);
    const enrolled = await enroll(sys, newCard(sys, 'C1'), r);
    card = enrolled.card;
    agreementId = card.creditFlag!.agreementId;
  });
  after(async () => {
    for (const c of clients) c.close();
    await sys.close();
  });

  /** A client of a server with the given credentials, closed after the suite. */
  function client<C extends { close(): void }>(Client: new (address: string, creds: ChannelCredentials) => C, address: string, creds: ChannelCredentials): C {
    const c = new Client(address, creds);
    clients.push(c);
    return c;
  }
  const issuerAs = (tls: TlsConfig) => client(IssuerServiceClient, sys.issuer.address, clientCredentials(tls, { role: 'issuer' }));
  const authorizerAs = (tls: TlsConfig) => client(AuthorizerServiceClient, sys.authorizer.address, clientCredentials(tls, { role: 'authorizer' }));

  /** grpc.health.v1.Health/Check on the issuer: open to every authenticated peer, so only the handshake decides. */
  function healthCheck(creds: ChannelCredentials): Promise<Buffer> {
    const c = client(Client, sys.issuer.address, creds);
    return new Promise((resolve, reject) =>
      c.makeUnaryRequest('/grpc.health.v1.Health/Check', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), { deadline: Date.now() + 3000 }, (err, res) =>
        err ? reject(err) : resolve(res!),
      ),
    );
  }
  const SERVING = Buffer.from([0x08, 0x01]); // HealthCheckResponse { status: SERVING }
  /** The server drops a connection whose client certificate it does not accept: the call never gets an answer. */
  const expectRefusedHandshake = (call: Promise<unknown>) => expectGrpcError(call, status.UNAVAILABLE);
  const opsCreds = async () => clientCredentials(await testTls('ops', 'admin'), { role: 'issuer' });

  describe('the TLS handshake', () => {
    it('lets a certificate of the CA through (the control case)', async () => {
      expect(await healthCheck(await opsCreds())).to.deep.equal(SERVING);
    });

    it('refuses a client without a certificate', async () => {
      const { ca } = await testTls('ops', 'admin');
      await expectRefusedHandshake(healthCheck(credentials.createSsl(ca, null, null, { checkServerIdentity: () => undefined })));
    });

    it('refuses a plaintext client', async () => {
      await expectGrpcError(healthCheck(credentials.createInsecure()), status.UNAVAILABLE);
    });

    it('refuses a certificate signed by another CA', async () => {
      const stranger = await tlsFrom(await createCa({ name: 'another CA' }), { role: 'ops', name: 'admin' });
      // The client trusts the real CA, so only the server's check of the client certificate can fail.
      const tls = { ...stranger, ca: (await testTls('ops', 'admin')).ca };
      await expectRefusedHandshake(healthCheck(clientCredentials(tls, { role: 'issuer' })));
    });

    it('refuses an expired certificate', async () => {
      const day = 86_400_000;
      const expired = await tlsFrom(await testCa(), { role: 'ops', name: 'admin', notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) });
      // Signed by the right CA: only its dates are wrong.
      expect(new X509Certificate(expired.cert).verify(new X509Certificate(expired.ca).publicKey)).to.equal(true);
      await expectRefusedHandshake(healthCheck(clientCredentials(expired, { role: 'issuer' })));
    });

    it('a client refuses a server whose certificate names another role than the one it called', async () => {
      // The ops client means to reach the authorizer but is pointed at the issuer.
      const err = await expectGrpcError(healthCheck(clientCredentials(await testTls('ops', 'admin'), { role: 'authorizer' })), status.UNAVAILABLE);
      expect(err.details).to.include('expected authorizer, reached spiffe://tapcredit/issuer/issuer-1');
    });
  });

  describe('the access policies', () => {
    it('refuses Deduct from a terminal certificate, and stores nothing', async () => {
      const before = await tableCounts(sys.authorizer.db);
      const c = authorizerAs(await testTls('terminal', 'T1'));
      const err = await expectGrpcError(
        callUnary(c, c.deduct, { issuerId: ISSUER_ID, items: [{ requestId: 'T1:999', agreementId, amount: money(200), tappedAt: new Date() }] }),
        status.PERMISSION_DENIED,
        'PEER_ROLE_NOT_ALLOWED',
      );
      expect(err.details).to.include('spiffe://tapcredit/terminal/T1');
      expect(await tableCounts(sys.authorizer.db)).to.deep.equal(before);
    });

    it('refuses Deduct from an issuer certificate in another issuer\'s name', async () => {
      const c = authorizerAs(await testTls('issuer', 'issuer-2'));
      await expectGrpcError(
        callUnary(c, c.deduct, { issuerId: ISSUER_ID, items: [{ requestId: 'T1:998', agreementId, amount: money(200), tappedAt: new Date() }] }),
        status.PERMISSION_DENIED,
        'PEER_IDENTITY_MISMATCH',
      );
    });

    describe('TapReport', () => {
      it("refuses terminal T1 reporting a tap of T2, and stores nothing", async () => {
        const { tap } = tapOf(card, agreementId, 'T2', 1000);
        const before = await tableCounts(sys.issuer.db);
        const t1 = issuerAs(await testTls('terminal', 'T1'));
        await expectGrpcError(callUnary(t1, t1.tapReport, { terminalId: 'T2', taps: [tap] }), status.PERMISSION_DENIED, 'PEER_IDENTITY_MISMATCH');
        // Naming itself as the sender does not help: each tap must be its own.
        await expectGrpcError(callUnary(t1, t1.tapReport, { terminalId: 'T1', taps: [tap] }), status.PERMISSION_DENIED, 'PEER_IDENTITY_MISMATCH');
        expect(await tableCounts(sys.issuer.db)).to.deep.equal(before);

        // The same report from T2's own certificate is taken: the refusal was about the identity only.
        const t2 = issuerAs(await testTls('terminal', 'T2'));
        const res = await callUnary(t2, t2.tapReport, { terminalId: 'T2', taps: [tap] });
        expect(res.results.map((r) => r.status)).to.deep.equal([TapReportStatus.TAP_REPORT_STATUS_STORED]);
      });

      it('refuses a deny-list watch in another terminal\'s name (a streaming RPC)', async () => {
        const t1 = issuerAs(await testTls('terminal', 'T1'));
        const watch = t1.watchDenyList({ fromVersion: '0', terminalId: 'T2' });
        const failed = new Promise<never>((_, reject) => watch.on('error', reject));
        watch.on('data', () => {});
        await expectGrpcError(failed, status.PERMISSION_DENIED, 'PEER_IDENTITY_MISMATCH');
      });

      it('refuses taps reported by ops or the phone app', async () => {
        const { tap } = tapOf(card, agreementId, 'T1', 1001);
        for (const who of [await testTls('ops', 'admin'), await testTls('phone', 'phone-app')]) {
          const c = issuerAs(who);
          await expectGrpcError(callUnary(c, c.tapReport, { terminalId: 'T1', taps: [tap] }), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
        }
      });
    });

    it('takes Settle only from the authorizer, in its own name', async () => {
      const settle = { settlementId: 'stl-x', authorizerId: 'authorizer-1', items: [], total: money(0) };
      const asIssuer = issuerAs(await testTls('issuer', ISSUER_ID));
      await expectGrpcError(callUnary(asIssuer, asIssuer.settle, settle), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
      const otherAuthorizer = issuerAs(await testTls('authorizer', 'authorizer-2'));
      await expectGrpcError(callUnary(otherAuthorizer, otherAuthorizer.settle, settle), status.PERMISSION_DENIED, 'PEER_IDENTITY_MISMATCH');
    });

    it('takes administration only from ops', async () => {
      const before = await tableCounts(sys.authorizer.db);
      const open = { accountId: 'acc-evil', holder: { name: 'Mallory', phoneNumber: '+8613900000000' }, currencyCode: 'CNY', creditLimit: money(0) };
      for (const who of [await testTls('phone', 'phone-app'), await testTls('issuer', ISSUER_ID), await testTls('terminal', 'T1')]) {
        const c = authorizerAs(who);
        await expectGrpcError(callUnary(c, c.openAccount, open), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
        await expectGrpcError(callUnary(c, c.topUp, { requestId: 'top-evil', accountId: 'acc-1', amount: money(1_000_000) }), status.PERMISSION_DENIED);
      }
      expect(await tableCounts(sys.authorizer.db)).to.deep.equal(before);
    });

    it('takes EnrollCard from the phone app, not from a terminal', async () => {
      const t1 = issuerAs(await testTls('terminal', 'T1'));
      await expectGrpcError(
        callUnary(t1, t1.enrollCard, { requestId: 'r-1', card: undefined, rider: undefined, accountId: 'acc-1' }),
        status.PERMISSION_DENIED,
        'PEER_ROLE_NOT_ALLOWED',
      );
    });

    it('lets only ops read a terminal\'s status', async () => {
      const asPhone = client(TerminalServiceClient, sys.terminals[0].address, clientCredentials(await testTls('phone', 'phone-app'), { role: 'terminal' }));
      await expectGrpcError(callUnary(asPhone, asPhone.getTerminalStatus, { unsentTapsLimit: 0 }), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
      const st = await callUnary(sys.terminalClients[0], sys.terminalClients[0].getTerminalStatus, { unsentTapsLimit: 0 });
      expect(st.terminalId).to.equal('T1');
    });
  });

  it('streams the deny list to terminals over mTLS: a card ops lists is declined at the gate', async () => {
    const r = rider(2);
    await openAccount(sys, r);
    const { card: listed } = await enroll(sys, newCard(sys, 'C2'), r);
    const asPhone = issuerAs(await testTls('phone', 'phone-app'));
    await expectGrpcError(callUnary(asPhone, asPhone.addToDenyList, { cardId: 'C2', reason: DenyListReason.DENY_LIST_REASON_LOST }), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
    await callUnary(sys.issuerClient, sys.issuerClient.addToDenyList, { cardId: 'C2', reason: DenyListReason.DENY_LIST_REASON_LOST });
    await waitFor(async () => (await tap(sys, listed)).declineReason === DeclineReason.DECLINE_REASON_DENY_LISTED);
  });

  it('buf curl reaches a server with --cacert --cert --key', async () => {
    const ops = await testTls('ops', 'admin');
    const files = { ca: join(sys.dir, 'ca.pem'), cert: join(sys.dir, 'ops.pem'), key: join(sys.dir, 'ops.key') };
    writeFileSync(files.ca, ops.ca);
    writeFileSync(files.cert, ops.cert);
    writeFileSync(files.key, ops.key, { mode: 0o600 });
    const port = sys.issuer.address.slice(sys.issuer.address.lastIndexOf(':') + 1);
    const { stdout } = await run(BUF, [
      'curl', '--protocol', 'grpc', '--cacert', files.ca, '--cert', files.cert, '--key', files.key,
      '-d', '{"card_id":"C1"}', `https://localhost:${port}/tapcredit.issuer.v1.IssuerService/GetCard`,
    ]);
    expect(JSON.parse(stdout).card.cardId).to.equal('C1');
  });
});
