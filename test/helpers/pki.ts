// A throwaway PKI per test process: one CA, certificates made on first use
// per identity (EC P-256, a few ms each) and reused by every test.
import type { Role } from '../../common/identity.js';
import { createCa, issueCertificate, type CertificateAuthority, type IdentityRequest } from '../../common/pki.js';
import type { TlsConfig } from '../../common/tls.js';

let ca: Promise<CertificateAuthority> | undefined;
const issued = new Map<string, Promise<TlsConfig>>();

/** The test CA shared by the process. */
export const testCa = () => (ca ??= createCa({ name: 'tapcredit test CA' }));

/** TLS material signed by ca (another CA, or with odd validity, for the negative tests). */
export async function tlsFrom(authority: CertificateAuthority, req: IdentityRequest): Promise<TlsConfig> {
  const pair = await issueCertificate(authority, req);
  return { ca: Buffer.from(authority.cert), cert: Buffer.from(pair.cert), key: Buffer.from(pair.key) };
}

/** TLS material for an identity under the shared test CA. */
export function testTls(role: Role, name: string): Promise<TlsConfig> {
  const id = `${role}/${name}`;
  let tls = issued.get(id);
  if (!tls) {
    tls = testCa().then((authority) => tlsFrom(authority, { role, name }));
    issued.set(id, tls);
  }
  return tls;
}
