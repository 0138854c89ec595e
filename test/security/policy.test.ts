// The pieces of mTLS and authorization that need no network: identities in
// certificates, the policy decisions, the tables' completeness, the choice
// of transport from the command line, and the development PKI on disk.
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { authorizerPolicy } from '../../authorizer/policy.js';
import { decideCall, decideRequest, rpcsWithoutRule, type AccessPolicy } from '../../common/authz.js';
import { identityFromSubjectAltName, identityOfCertificate, parseSpiffeId, spiffeId, type PeerIdentity } from '../../common/identity.js';
import { ensureDevPki } from '../../common/pki.js';
import { checkServerPeer, chooseTransport, hostOf, isLoopback } from '../../common/tls.js';
import { AuthorizerServiceService } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceService } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceService } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { issuerPolicy } from '../../issuer/policy.js';
import { terminalPolicy } from '../../terminal/policy.js';
import { removeDir, tempDir } from '../helpers/assert.js';

const peer = (uri: string) => parseSpiffeId(uri)!;

describe('peer identities', () => {
  it('reads role and name from a SPIFFE ID of the tapcredit trust domain', () => {
    expect(parseSpiffeId('spiffe://tapcredit/terminal/T0001')).to.deep.equal({ role: 'terminal', name: 'T0001', uri: 'spiffe://tapcredit/terminal/T0001' });
    expect(spiffeId('issuer', 'issuer-1')).to.equal('spiffe://tapcredit/issuer/issuer-1');
  });

  it('rejects other trust domains, unknown roles and malformed names', () => {
    for (const uri of ['spiffe://other/terminal/T1', 'spiffe://tapcredit/admin/root', 'spiffe://tapcredit/terminal/T1/x', 'spiffe://tapcredit/terminal/', 'https://tapcredit/terminal/T1']) {
      expect(parseSpiffeId(uri), uri).to.equal(undefined);
    }
    expect(() => spiffeId('terminal', 'T1/../T2')).to.throw();
  });

  it('takes exactly one identity from a subjectAltName, ignoring DNS and IP entries', () => {
    expect(identityFromSubjectAltName('URI:spiffe://tapcredit/ops/admin, DNS:localhost, IP Address:127.0.0.1')?.name).to.equal('admin');
    expect(identityFromSubjectAltName('URI:spiffe://tapcredit/terminal/T1, URI:spiffe://tapcredit/terminal/T2')).to.equal(undefined);
    expect(identityFromSubjectAltName('DNS:localhost')).to.equal(undefined);
    expect(identityFromSubjectAltName(undefined)).to.equal(undefined);
  });

  it('a client accepts a server only with the role (and name) it meant to call', () => {
    const san = { subjectaltname: 'URI:spiffe://tapcredit/issuer/issuer-1, DNS:localhost' };
    expect(checkServerPeer(san, { role: 'issuer' })).to.equal(undefined);
    expect(checkServerPeer(san, { role: 'issuer', name: 'issuer-1' })).to.equal(undefined);
    expect(checkServerPeer(san, { role: 'issuer', name: 'issuer-2' })).to.include('expected issuer/issuer-2');
    expect(checkServerPeer(san, { role: 'authorizer' })).to.include('expected authorizer');
    expect(checkServerPeer({ subjectaltname: 'DNS:localhost' }, { role: 'issuer' })).to.include('no tapcredit identity');
  });
});

describe('access decisions', () => {
  const policy: AccessPolicy = {
    service: 'demo.v1.Demo',
    domain: 'demo',
    rules: {
      Read: { allow: ['ops', 'phone'] },
      Report: { allow: ['terminal'], bind: (p: PeerIdentity, req: { terminalId: string }) => (req.terminalId === p.name ? undefined : 'not yours') },
    },
  };
  const reason = (d: ReturnType<typeof decideCall>) => (d.ok ? 'OK' : `${d.error.code} ${d.error.reason}`);

  it('allows the roles listed for an RPC and refuses the others with PERMISSION_DENIED', () => {
    expect(reason(decideCall([policy], '/demo.v1.Demo/Read', peer('spiffe://tapcredit/phone/phone-app')))).to.equal('OK');
    expect(reason(decideCall([policy], '/demo.v1.Demo/Read', peer('spiffe://tapcredit/terminal/T1')))).to.equal(`${status.PERMISSION_DENIED} PEER_ROLE_NOT_ALLOWED`);
  });

  it('refuses an RPC that is not in the table (fail closed)', () => {
    expect(reason(decideCall([policy], '/demo.v1.Demo/Delete', peer('spiffe://tapcredit/ops/admin')))).to.equal(`${status.PERMISSION_DENIED} RPC_NOT_IN_POLICY`);
    expect(reason(decideCall([policy], '/other.v1.Other/Read', peer('spiffe://tapcredit/ops/admin')))).to.equal(`${status.PERMISSION_DENIED} RPC_NOT_IN_POLICY`);
  });

  it('refuses a caller whose certificate carries no identity with UNAUTHENTICATED', () => {
    expect(reason(decideCall([policy], '/demo.v1.Demo/Read', undefined))).to.equal(`${status.UNAUTHENTICATED} PEER_IDENTITY_MISSING`);
  });

  it('opens health and reflection to every authenticated peer', () => {
    for (const path of ['/grpc.health.v1.Health/Check', '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo']) {
      expect(reason(decideCall([], path, peer('spiffe://tapcredit/terminal/T1'))), path).to.equal('OK');
    }
  });

  it('refuses a request that names another caller, and passes one that names the caller', () => {
    const rule = policy.rules.Report;
    const t1 = peer('spiffe://tapcredit/terminal/T1');
    expect(decideRequest(rule, '/demo.v1.Demo/Report', t1, { terminalId: 'T1' }).ok).to.equal(true);
    const refused = decideRequest(rule, '/demo.v1.Demo/Report', t1, { terminalId: 'T2' });
    expect(refused.ok ? 'OK' : `${refused.error.code} ${refused.error.reason} ${refused.error.message}`).to.equal(`${status.PERMISSION_DENIED} PEER_IDENTITY_MISMATCH not yours`);
  });

  it('lets a body that did not parse through to be refused as INVALID_ARGUMENT by the handler', () => {
    class Unparsed {}
    expect(decideRequest(policy.rules.Report, '/demo.v1.Demo/Report', peer('spiffe://tapcredit/terminal/T1'), new Unparsed()).ok).to.equal(true);
  });

  for (const [policyOf, definition] of [
    [issuerPolicy, IssuerServiceService],
    [authorizerPolicy, AuthorizerServiceService],
    [terminalPolicy, TerminalServiceService],
  ] as const) {
    it(`${policyOf.service}: every RPC of the generated service has a rule, and every rule an RPC`, () => {
      expect(rpcsWithoutRule(policyOf, definition), 'add the new RPCs to the policy table').to.deep.equal([]);
      const rpcs = Object.values(definition).map((m) => m.path.slice(m.path.lastIndexOf('/') + 1));
      expect(Object.keys(policyOf.rules).filter((r) => !rpcs.includes(r))).to.deep.equal([]);
    });
  }

  it('the tables say who makes money move: Deduct only the issuer, Settle only the authorizer, TapReport only terminals', () => {
    expect(authorizerPolicy.rules.Deduct.allow).to.deep.equal(['issuer']);
    expect(authorizerPolicy.rules.AuthorizeEnrollment.allow).to.deep.equal(['issuer']);
    expect(issuerPolicy.rules.Settle.allow).to.deep.equal(['authorizer']);
    expect(issuerPolicy.rules.TapReport.allow).to.deep.equal(['terminal']);
    for (const rpc of ['OpenAccount', 'TopUp', 'SetAccountState']) expect(authorizerPolicy.rules[rpc].allow, rpc).to.deep.equal(['ops']);
  });
});

describe('choosing the transport of a process', () => {
  const files = { ca: '/nonexistent/ca.pem', cert: '/nonexistent/x.pem', key: '/nonexistent/x.key' };

  it('uses mTLS unless --insecure is given, and says how to get certificates when they are missing', () => {
    expect(() => chooseTransport({ insecure: false, listenHost: '127.0.0.1', files })).to.throw(/npm run certs/);
  });

  it('allows plaintext on loopback only', () => {
    expect(chooseTransport({ insecure: true, listenHost: '127.0.0.1', peerAddresses: ['localhost:50052', '[::1]:50053'], files })).to.equal(undefined);
    expect(() => chooseTransport({ insecure: true, listenHost: '0.0.0.0', files })).to.throw(/only allowed on loopback; refused for 0\.0\.0\.0/);
    expect(() => chooseTransport({ insecure: true, listenHost: '127.0.0.1', peerAddresses: ['10.1.2.3:50052'], files })).to.throw(/10\.1\.2\.3/);
  });

  it('finds the host of an address', () => {
    expect(hostOf('127.0.0.1:50052')).to.equal('127.0.0.1');
    expect(hostOf('[::1]:50052')).to.equal('::1');
    expect(hostOf('dns:///issuer.internal:50052')).to.equal('issuer.internal');
    expect(hostOf('localhost')).to.equal('localhost');
    expect(['127.0.0.1', '127.9.9.9', '::1', 'localhost'].every(isLoopback)).to.equal(true);
    expect(['0.0.0.0', '10.0.0.1', 'issuer.internal', '::'].some(isLoopback)).to.equal(false);
  });
});

describe('the development PKI (npm run certs)', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  it('makes a CA and a certificate per identity that chains to it, with private keys readable by the owner only', async () => {
    const written = await ensureDevPki(dir, { issuerId: 'issuer-1', authorizerId: 'authorizer-1', terminalIds: ['T0001', 'T0002'], hosts: ['issuer.internal'] });
    expect(written.length).to.equal(7); // the CA and six identities
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    const expected = {
      'issuer.pem': 'spiffe://tapcredit/issuer/issuer-1',
      'authorizer.pem': 'spiffe://tapcredit/authorizer/authorizer-1',
      'terminal-T0001.pem': 'spiffe://tapcredit/terminal/T0001',
      'terminal-T0002.pem': 'spiffe://tapcredit/terminal/T0002',
      'ops.pem': 'spiffe://tapcredit/ops/admin',
      'phone.pem': 'spiffe://tapcredit/phone/phone-app',
    };
    for (const [file, uri] of Object.entries(expected)) {
      const pem = readFileSync(join(dir, file));
      const cert = new X509Certificate(pem);
      expect(cert.verify(ca.publicKey), file).to.equal(true);
      expect(cert.checkIssued(ca), file).to.equal(true);
      expect(identityOfCertificate(pem)?.uri, file).to.equal(uri);
    }
    expect(new X509Certificate(readFileSync(join(dir, 'issuer.pem'))).subjectAltName).to.include('DNS:issuer.internal');
    for (const key of readdirSync(dir).filter((f) => f.endsWith('.key'))) expect(statSync(join(dir, key)).mode & 0o077, key).to.equal(0);
  });

  it('keeps what exists: a second run writes nothing, a new terminal gets a certificate of the same CA', async () => {
    await ensureDevPki(dir, { issuerId: 'issuer-1', authorizerId: 'authorizer-1', terminalIds: ['T0001'] });
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    expect(await ensureDevPki(dir, { issuerId: 'issuer-1', authorizerId: 'authorizer-1', terminalIds: ['T0001'] })).to.deep.equal([]);
    expect(await ensureDevPki(dir, { issuerId: 'issuer-1', authorizerId: 'authorizer-1', terminalIds: ['T0001', 'T0009'] })).to.deep.equal([join(dir, 'terminal-T0009.pem')]);
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).to.equal(ca);
    expect(new X509Certificate(readFileSync(join(dir, 'terminal-T0009.pem'))).checkIssued(new X509Certificate(ca))).to.equal(true);
  });
});
