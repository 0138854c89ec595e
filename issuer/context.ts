// What the issuer's domain modules share: the database, the issuer's identity
// and keys, a clock (tests move it), and the port to the credit authorizer.
import type { KeyObject } from 'node:crypto';
import type { Db } from '../common/db.js';
import { Leases } from '../common/leases.js';
import type { Logger } from '../common/log.js';
import type {
  AuthorizeEnrollmentRequest,
  AuthorizeEnrollmentResponse,
  DeductRequest,
  DeductResponse,
  RevokeAgreementRequest,
  RevokeAgreementResponse,
} from '../gen/tapcredit/authorizer/v1/authorizer.js';
import type { DebtRetryConfig } from './debts.js';
import type { DenyListFeed } from './deny-list-feed.js';
import type { FareCapConfig } from './fares.js';

/**
 * The calls the issuer makes to the credit authorizer. The gRPC adapter
 * (authorizer-client.ts) rejects with an ApiError: the authorizer's own code
 * and reason, or UNAVAILABLE AUTHORIZER_UNAVAILABLE when it cannot be reached.
 */
export interface AuthorizerPort {
  authorizeEnrollment(request: AuthorizeEnrollmentRequest): Promise<AuthorizeEnrollmentResponse>;
  deduct(request: DeductRequest): Promise<DeductResponse>;
  revokeAgreement(request: RevokeAgreementRequest): Promise<RevokeAgreementResponse>;
}

/** Taps of one card from different terminals closer in time than this are not compared for order (terminal clocks differ). */
export const DEFAULT_CLONE_CLOCK_SKEW_MS = 60_000;

/** A tap stamped later than this after the issuer received it was stamped by a clock that runs ahead. */
export const TAP_CLOCK_AHEAD_TOLERANCE_MS = 5 * 60_000;

/** Two taps of one card at one terminal (or line) this close may be one ride presented twice (see tap-risk.ts). */
export const DEFAULT_REPEAT_WINDOW_MS = 60_000;

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
  /** Daily fare cap; none when unset. */
  fareCap?: FareCapConfig;
  /** Schedule of debt retries; DEFAULT_DEBT_RETRY when unset. */
  debtRetry?: DebtRetryConfig;
  /** Clock tolerance of the clone check; DEFAULT_CLONE_CLOCK_SKEW_MS when unset. */
  cloneClockSkewMs?: number;
  /** Window of the repeated-presentation rule; DEFAULT_REPEAT_WINDOW_MS when unset. */
  repeatWindowMs?: number;
  /** Wakes WatchDenyList streams after a committed deny-list change. */
  denyListFeed?: DenyListFeed;
  /** This replica's claims on the debit and debt outboxes (several replicas may share the database); the process's when unset. */
  leases?: Leases;
}

/** Leases of contexts that bring none (tests): one set per process, every claim with its own token. */
const processLeases = new Leases();

export const leasesOf = (ctx: IssuerContext): Leases => ctx.leases ?? processLeases;




