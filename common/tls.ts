// Mutual TLS for every hop: servers require a client certificate signed by
// the system's CA; clients present their own certificate and check that the
// server they reached carries the identity they meant to call (its SPIFFE ID,
// see common/identity.ts), not merely a host name. Plaintext only when asked
// for explicitly (--insecure), and then only on loopback.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { credentials, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import { dataDir, setting } from './config.js';
import { CRL_FILE } from './pki.js';
import { identityFromSubjectAltName, identityOfCertificate, spiffeId, type PeerIdentity, type Role } from './identity.js';

export interface TlsConfig {
  /** The CA certificate(s) that sign every peer's certificate, PEM. */
  ca: Buffer;
  /** This process's certificate, PEM. */
  cert: Buffer;
  /** This process's private key, PEM. Secret: never logged. */
  key: Buffer;
  /** A servers's certificate revocation list (common/revocation.ts), watched for changes; may not exist yet. */
  crlFile?: string;
}

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export function loadTls(files: TlsFiles): TlsConfig {
  const missing = Object.values(files).filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new Error(`TLS files not found: ${missing.join(', ')}. Run \`npm run certs\` (or pass your own with --tls-ca/--tls-cert/--tls-key), or --insecure on loopback`);
  }
  // The CRL `npm run certs -- --revoke` writes beside the CA.
  return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key), crlFile: join(dirname(files.ca), CRL_FILE) };
}

/** Server side: TLS that refuses a connection without a client certificate signed by the CA. */
export const serverCredentials = (tls: TlsConfig): ServerCredentials =>
  ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true);

/** What a client expects the server to be: a role, and a name when the client knows it (e.g. the issuer id it settles with). */
export interface ExpectedPeer {
  role: Role;
  name?: string;
}

/** Refusal text when a server certificate is not the expected peer, else undefined. */
export function checkServerPeer(cert: Pick<PeerCertificate, 'subjectaltname'>, expected: ExpectedPeer): string | undefined {
  const peer = identityFromSubjectAltName(cert.subjectaltname);
  if (!peer) return 'the server certificate carries no tapcredit identity';
  if (peer.role !== expected.role || (expected.name !== undefined && peer.name !== expected.name)) {
    return `expected ${expected.role}${expected.name ? `/${expected.name}` : ''}, reached ${peer.uri}`;
  }
  return undefined;
}

/**
 * Client side: TLS with this process's certificate. The CA chain is verified
 * as usual; instead of the host name, the server's SPIFFE ID is checked, so
 * a terminal's certificate cannot stand in for the issuer, whatever address.
 */
export function clientCredentials(tls: TlsConfig, expected: ExpectedPeer): ChannelCredentials {
  return credentials.createSsl(tls.ca, tls.key, tls.cert, {
    checkServerIdentity: (_host, cert) => {
      const refusal = checkServerPeer(cert, expected);
      return refusal ? new Error(refusal) : undefined;
    },
  });
}

/** mTLS credentials when tls is set, plaintext otherwise (tests and --insecure). */
export const channelCredentials = (tls: TlsConfig | undefined, expected: ExpectedPeer): ChannelCredentials =>
  tls ? clientCredentials(tls, expected) : credentials.createInsecure();

/** Throws unless this process's own certificate names it (role and name): a misconfigured certificate fails at start, not on every call. */
export function assertOwnIdentity(tls: TlsConfig, role: Role, name: string): void {
  const own = identityOfCertificate(tls.cert);
  if (own?.role !== role || own.name !== name) {
    throw new Error(`the TLS certificate names ${own?.uri ?? 'no tapcredit identity'}, expected ${spiffeId(role, name)}`);
  }
}

/** The caller's identity on a TLS connection (undefined on plaintext or for a certificate with no tapcredit identity). */
export function peerIdentity(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null }): PeerIdentity | undefined {
  return identityFromSubjectAltName(call.getAuthContext()?.sslPeerCertificate?.subjectaltname);
}

/** The host of "host:port", "[v6]:port" or "dns:///host:port". */
export function hostOf(address: string): string {
  const target = address.replace(/^[a-z0-9+.-]+:\/\/[^/]*\//i, '');
  if (target.startsWith('[')) return target.slice(1, target.indexOf(']'));
  const colon = target.lastIndexOf(':');
  return colon > 0 && target.indexOf(':') === colon ? target.slice(0, colon) : target;
}

export const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);

/**
 * The transport of a process started from the command line: mTLS with the
 * given files, or plaintext with --insecure, refused unless the listening
 * host and every peer address are loopback.
 */
export function chooseTransport(opts: { insecure: boolean; listenHost?: string; peerAddresses?: string[]; files: TlsFiles }): TlsConfig | undefined {
  if (!opts.insecure) return loadTls(opts.files);
  const hosts = [...(opts.listenHost !== undefined ? [opts.listenHost] : []), ...(opts.peerAddresses ?? []).map(hostOf)];
  const remote = hosts.filter((h) => !isLoopback(h));
  if (remote.length > 0) throw new Error(`--insecure (plaintext) is only allowed on loopback; refused for ${remote.join(', ')}`);
  return undefined;
}

/** Where the development certificates live: --certs-dir, TAPCREDIT_CERTS_DIR, or <data dir>/certs. */
export const certsDir = () => setting('certs-dir', 'TAPCREDIT_CERTS_DIR', join(dataDir(), 'certs'));

/**
 * TLS files from --tls-ca / --tls-cert / --tls-key (or TAPCREDIT_TLS_CA,
 * TAPCREDIT_TLS_CERT, TAPCREDIT_TLS_KEY), defaulting to <certs dir>/ca.pem,
 * <certs dir>/<identityFile>.pem and .key as `npm run certs` writes them.
 */
export function tlsFilesFromSettings(identityFile: string): TlsFiles {
  const dir = certsDir();
  return {
    ca: setting('tls-ca', 'TAPCREDIT_TLS_CA', join(dir, 'ca.pem')),
    cert: setting('tls-cert', 'TAPCREDIT_TLS_CERT', join(dir, `${identityFile}.pem`)),
    key: setting('tls-key', 'TAPCREDIT_TLS_KEY', join(dir, `${identityFile}.key`)),
  };
}
