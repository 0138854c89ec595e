// What the issuer's domain modules share: the database, the issuer's identity
// and keys, a clock (tests move it), and the port to the credit authorizer.
import type { KeyObject } from 'node:crypto';
import type { Db } from '../common/db.js';
import type { Logger } from '../common/log.js';
import type {
  AuthorizeEnrollmentRequest,
  AuthorizeEnrollmentResponse,
  DeductRequest,
  DeductResponse,
} from '../gen/tapcredit/authorizer/v1/authorizer.js';

/**
 * The calls the issuer makes to the credit authorizer. The gRPC adapter
 * (authorizer-client.ts) rejects with an ApiError: the authorizer's own code
 * and reason, or UNAVAILABLE AUTHORIZER_UNAVAILABLE when it cannot be reached.
 */
export interface AuthorizerPort {
  authorizeEnrollment(request: AuthorizeEnrollmentRequest): Promise<AuthorizeEnrollmentResponse>;
  deduct(request: DeductRequest): Promise<DeductResponse>;
}

export interface IssuerContext {
  db: Db;
  issuerId: string;
  issuerCode: string;
  /** Currency of the fares this issuer charges (ISO 4217). */
  currencyCode: string;
  masterKey: Buffer;
  signingKey: KeyObject;
  authorizer: AuthorizerPort;
  now: () => Date;
  log: Logger;
}

/** Tap life-cycle states as stored (the TapState enum names without prefix). */
export type TapStateName = 'RECEIVED' | 'DEDUCTING' | 'DEDUCTED' | 'DECLINED' | 'SETTLED' | 'REJECTED';

/** Rows per multi-row INSERT / IN list: far below SQLite's and PostgreSQL's bind-parameter limits. */
export const CHUNK = 500;

export function chunks<T>(items: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}


