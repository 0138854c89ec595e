// A small private PKI for mTLS between tapcredit's servers and clients: one
// CA, and an EC P-256 certificate per identity carrying its SPIFFE ID (see
// common/identity.ts). Pure JavaScript (@peculiar/x509 over WebCrypto): no
// openssl needed and no network. Used by `npm run certs`, `npm start` and the
// tests; the servers only read the PEM files it writes.
import 'reflect-metadata'; // required by @peculiar/x509's dependency injection (tsyringe)
import { randomBytes, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { identityFile, spiffeId, type Role } from './identity.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** Host names and addresses every server certificate is valid for, so grpcurl / buf curl can verify it locally. */
export const LOCAL_HOSTS = ['localhost', '127.0.0.1', '::1'];

export interface PemPair {
  /** Certificate, PEM. */
  cert: string;
  /** PKCS#8 private key, PEM. Secret. */
  key: string;
}

export interface CertificateAuthority extends PemPair {
  certificate: x509.X509Certificate;
  privateKey: CryptoKey;
}

export interface Validity {
  notBefore?: Date;
  notAfter?: Date;
}

const serial = () => {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f; // positive INTEGER
  return bytes.toString('hex');
};

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
}

/** A new CA (valid 10 years by default) that signs every certificate of the system. */
export async function createCa(opts: { name?: string } & Validity = {}): Promise<CertificateAuthority> {
  const keys = await keyPair();
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${opts.name ?? 'tapcredit development CA'}`,
    notBefore,
    notAfter: opts.notAfter ?? new Date(notBefore.getTime() + 3650 * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificate, privateKey: keys.privateKey, cert: certificate.toString('pem') + '\n', key: await pkcs8Pem(keys.privateKey) };
}

/** Loads a CA written by writeCa (to sign more certificates with it). */
export async function loadCa(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const certificate = new x509.X509Certificate(certPem);
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
  return { certificate, privateKey, cert: certPem, key: keyPem };
}

export interface IdentityRequest extends Validity {
  role: Role;
  name: string;
  /** DNS names / IP addresses a server certificate is valid for (clients only need the SPIFFE ID). */
  hosts?: string[];
}

const isIp = (host: string) => /^[0-9.]+$/.test(host) || host.includes(':');

/**
 * A certificate for one identity, signed by the CA, valid 2 years by default.
 * Servers (issuer, authorizer, terminal) also act as clients of each other,
 * so their certificates allow both uses; ops and phone certificates are
 * client-only.
 */
export async function issueCertificate(ca: CertificateAuthority, req: IdentityRequest): Promise<PemPair> {
  const keys = await keyPair();
  const server = req.role === 'issuer' || req.role === 'authorizer' || req.role === 'terminal';
  const hosts = server ? [...new Set([...LOCAL_HOSTS, ...(req.hosts ?? [])])] : [];
  const notBefore = req.notBefore ?? new Date(Date.now() - 60_000);
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${req.role}/${req.name}`,
    issuer: ca.certificate.subject,
    notBefore,
    notAfter: req.notAfter ?? new Date(notBefore.getTime() + 730 * DAY_MS),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: ca.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(server ? [OID_SERVER_AUTH, OID_CLIENT_AUTH] : [OID_CLIENT_AUTH]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: spiffeId(req.role, req.name) },
        ...hosts.map((h) => ({ type: isIp(h) ? ('ip' as const) : ('dns' as const), value: h })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.certificate),
    ],
  });
  return { cert: certificate.toString('pem') + '\n', key: await pkcs8Pem(keys.privateKey) };
}

/** File names in a certificate directory: ca.pem (+ ca.key), <file>.pem and <file>.key per identity. */
export const certFiles = (dir: string, file: string) => ({ cert: join(dir, `${file}.pem`), key: join(dir, `${file}.key`) });

function writePair(dir: string, file: string, pair: PemPair): void {
  const files = certFiles(dir, file);
  writeFileSync(files.cert, pair.cert);
  writeFileSync(files.key, pair.key, { mode: 0o600 });
  chmodSync(files.key, 0o600);
}

export interface DevPkiOptions {
  issuerId: string;
  authorizerId: string;
  terminalIds: string[];
  /** Extra host names / addresses for the server certificates. */
  hosts?: string[];
  /** Issue every identity's certificate anew (the CA is kept). */
  reissue?: boolean;
}

export const DEV_PKI_DEFAULTS: DevPkiOptions = { issuerId: 'issuer-1', authorizerId: 'authorizer-1', terminalIds: ['T0001'] };

/**
 * Makes what is missing in dir: the CA (kept, so certificates issued later
 * still chain to it) and a certificate per identity. Existing files are left
 * alone unless reissue is set; returns the certificate files written.
 */
export async function ensureDevPki(dir: string, opts: DevPkiOptions = DEV_PKI_DEFAULTS): Promise<string[]> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caFiles = certFiles(dir, 'ca');
  const written: string[] = [];
  let ca: CertificateAuthority;
  if (existsSync(caFiles.cert) && existsSync(caFiles.key)) {
    ca = await loadCa(readFileSync(caFiles.cert, 'utf8'), readFileSync(caFiles.key, 'utf8'));
  } else {
    ca = await createCa();
    writePair(dir, 'ca', ca);
    written.push(caFiles.cert);
  }
  const identities: { role: Role; name: string }[] = [
    { role: 'issuer', name: opts.issuerId },
    { role: 'authorizer', name: opts.authorizerId },
    ...opts.terminalIds.map((name) => ({ role: 'terminal' as const, name })),
    { role: 'ops', name: 'admin' },
    { role: 'phone', name: 'phone-app' },
  ];
  for (const id of identities) {
    const file = identityFile(id.role, id.name);
    if (!opts.reissue && existsSync(certFiles(dir, file).cert)) continue;
    writePair(dir, file, await issueCertificate(ca, { ...id, hosts: opts.hosts }));
    written.push(certFiles(dir, file).cert);
  }
  return written;
}

/** File of the certificate revocation list in a certificate directory. */
export const CRL_FILE = 'crl.pem';

/**
 * A CRL signed by the CA listing the serials of `revoked` PEM certificates
 * plus those of the previous CRL (if any): revocation only ever adds.
 */
export async function revocationList(ca: CertificateAuthority, revoked: string[], previousPem?: string): Promise<string> {
  const entries = new Map<string, Date>();
  if (previousPem) for (const e of new x509.X509Crl(previousPem).entries) entries.set(e.serialNumber.toLowerCase(), e.revocationDate);
  for (const pem of revoked) {
    const serialNumber = new x509.X509Certificate(pem).serialNumber.toLowerCase();
    if (!entries.has(serialNumber)) entries.set(serialNumber, new Date());
  }
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.certificate.subject,
    thisUpdate: new Date(),
    nextUpdate: new Date(Date.now() + 30 * DAY_MS),
    entries: [...entries].map(([serialNumber, revocationDate]) => ({ serialNumber, revocationDate })),
    signingAlgorithm: ALG,
    signingKey: ca.privateKey,
  });
  return crl.toString('pem') + '\n';
}

/** The revoked serials (lowercase hex) of a CRL, after checking the CA signed it; throws otherwise. */
export async function revokedSerials(crlPem: string, caPem: string): Promise<Set<string>> {
  const crl = new x509.X509Crl(crlPem);
  const ca = new x509.X509Certificate(caPem);
  if (!(await crl.verify({ publicKey: ca.publicKey }))) throw new Error('the CRL is not signed by the CA');
  return new Set(crl.entries.map((e) => e.serialNumber.toLowerCase().replace(/^0+/, '')));
}

/** Revokes the certificate `<name>.pem` of dir (e.g. "terminal-T0001", "phone"): adds its serial to dir's CRL. Returns the serial. */
export async function revokeInDir(dir: string, name: string): Promise<string> {
  const caFiles = certFiles(dir, 'ca');
  const ca = await loadCa(readFileSync(caFiles.cert, 'utf8'), readFileSync(caFiles.key, 'utf8'));
  const certPem = readFileSync(certFiles(dir, name).cert, 'utf8');
  const crlFile = join(dir, CRL_FILE);
  const crl = await revocationList(ca, [certPem], existsSync(crlFile) ? readFileSync(crlFile, 'utf8') : undefined);
  writeFileSync(crlFile, crl);
  return new x509.X509Certificate(certPem).serialNumber.toLowerCase();
}
