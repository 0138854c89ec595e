// Peer identities carried by certificates: one URI subject alternative name
// "spiffe://tapcredit/<role>/<name>" per certificate (the SPIFFE ID form), e.g.
//   spiffe://tapcredit/terminal/T0001   a terminal; the name is its terminal id
//   spiffe://tapcredit/issuer/issuer-1  an issuer; the name is its issuer id
//   spiffe://tapcredit/authorizer/authorizer-1
//   spiffe://tapcredit/ops/admin        an operator (administration)
//   spiffe://tapcredit/phone/phone-app  the issuer's phone app
// Servers authorize calls by role and name; clients check that the server
// they reached has the role they meant to call, whatever its host name.
import { X509Certificate } from 'node:crypto';

export const TRUST_DOMAIN = 'tapcredit';

export const ROLES = ['issuer', 'authorizer', 'terminal', 'ops', 'phone'] as const;
export type Role = (typeof ROLES)[number];

export interface PeerIdentity {
  role: Role;
  /** Terminal id, issuer id, authorizer id, or the operator's / app's name. */
  name: string;
  /** The SPIFFE ID as written in the certificate. */
  uri: string;
}

// Names are ids (see common/validate.ts): no '/' so the URI splits unambiguously.
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function spiffeId(role: Role, name: string): string {
  if (!NAME.test(name)) throw new Error(`identity name ${JSON.stringify(name)}: letters, digits, '.', '_', '-', at most 64`);
  return `spiffe://${TRUST_DOMAIN}/${role}/${name}`;
}

/** The identity a SPIFFE ID names, or undefined when it is not one of ours. */
export function parseSpiffeId(uri: string): PeerIdentity | undefined {
  const m = /^spiffe:\/\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(uri);
  if (!m || m[1] !== TRUST_DOMAIN || !(ROLES as readonly string[]).includes(m[2]) || !NAME.test(m[3])) return undefined;
  return { role: m[2] as Role, name: m[3], uri };
}

/**
 * The identity in a certificate's subjectAltName as Node prints it
 * ("URI:spiffe://..., DNS:localhost, IP Address:127.0.0.1"). Exactly one of
 * our SPIFFE IDs must be there: a certificate naming two peers names none.
 */
export function identityFromSubjectAltName(subjectAltName: string | undefined): PeerIdentity | undefined {
  const ids = (subjectAltName ?? '')
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:spiffe://'))
    .map((entry) => parseSpiffeId(entry.slice(4)));
  return ids.length === 1 ? ids[0] : undefined;
}

/** Base name of an identity's files in a certificate directory: the role, plus the name for terminals ("terminal-T0001"). */
export const identityFile = (role: Role, name: string) => (role === 'terminal' ? `terminal-${name}` : role);

/** The identity of a PEM certificate (a service checks its own certificate at start). */
export const identityOfCertificate = (pem: Buffer | string): PeerIdentity | undefined =>
  identityFromSubjectAltName(new X509Certificate(pem).subjectAltName);
