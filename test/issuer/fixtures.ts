// Test fixtures for the issuer: a real SQLite file in a temp dir, a fake
// credit authorizer that can be told to decline or to be unreachable, and
// cards that produce genuine proofs for the phone and for terminals.
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCard, newTerminalRandom, zeroAmountDebit } from '../../common/card.js';
import { openDatabase, type Db } from '../../common/db.js';
import { apiError } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import {
  AgreementState,
  DeductDeclineReason,
  DeductStatus,
  type AuthorizeEnrollmentRequest,
  type AuthorizeEnrollmentResponse,
  type DeductItem,
  type DeductRequest,
  type DeductResponse,
  type DeductResult,
  type RevokeAgreementRequest,
  type RevokeAgreementResponse,
} from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import type { EnrollCardRequest } from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import type { Tap } from '../../gen/tapcredit/type/v1/tap.js';
import type { AuthorizerPort, IssuerContext } from '../../issuer/context.js';
import { MIGRATIONS_TABLE, migrations } from '../../issuer/migrations.js';

export const ISSUER_ID = 'issuer-1';
export const ISSUER_CODE = 'CITY1';
export const CURRENCY = 'CNY';
export const FARE = 200n;
export const RIDER = { name: 'Li Lei', phoneNumber: '+8613800138000' };

export const money = (minorUnits: bigint | number | string, currencyCode = CURRENCY) => ({ currencyCode, minorUnits: String(minorUnits) });

/**
 * A credit authorizer that behaves like the real one where the issuer can
 * tell: agreements and debits are idempotent by request id. `decide` picks
 * each debit's outcome; `failWith` makes every call fail (e.g. UNAVAILABLE).
 */
export class FakeAuthorizer implements AuthorizerPort {
  enrollCalls: AuthorizeEnrollmentRequest[] = [];
  deductCalls: DeductRequest[] = [];
  failWith: Error | undefined;
  enrollError: Error | undefined;
  decide: (item: DeductItem) => Omit<DeductResult, 'requestId'> = (item) => ({
    status: DeductStatus.DEDUCT_STATUS_DEBITED,
    deductionId: `ded-${item.requestId}`,
    declineReason: DeductDeclineReason.DEDUCT_DECLINE_REASON_UNSPECIFIED,
    errorReason: '',
    message: '',
  });
  private readonly results = new Map<string, DeductResult>();

  /** The agreement the fake grants for an authorizer request id (stable across repeats). */
  static agreementFor(requestId: string) {
    return 'agr-' + createHash('sha256').update(requestId).digest('hex').slice(0, 16);
  }

  async authorizeEnrollment(req: AuthorizeEnrollmentRequest): Promise<AuthorizeEnrollmentResponse> {
    this.enrollCalls.push(req);
    if (this.failWith) throw this.failWith;
    if (this.enrollError) throw this.enrollError;
    return {
      agreement: {
        agreementId: FakeAuthorizer.agreementFor(req.requestId),
        accountId: req.accountId,
        issuerId: req.issuerId,
        cardId: req.cardId,
        state: AgreementState.AGREEMENT_STATE_ACTIVE,
        createdAt: new Date(),
      },
    };
  }

  async deduct(req: DeductRequest): Promise<DeductResponse> {
    this.deductCalls.push(req);
    if (this.failWith) throw this.failWith;
    return {
      results: req.items.map((item) => {
        let result = this.results.get(item.requestId);
        if (!result) this.results.set(item.requestId, (result = { requestId: item.requestId, ...this.decide(item) }));
        return result;
      }),
    };
  }

  revokeCalls: RevokeAgreementRequest[] = [];

  async revokeAgreement(req: RevokeAgreementRequest): Promise<RevokeAgreementResponse> {
    this.revokeCalls.push(req);
    if (this.failWith) throw this.failWith;
    return {
      agreement: {
        agreementId: req.agreementId,
        accountId: '',
        issuerId: req.issuerId,
        cardId: '',
        state: AgreementState.AGREEMENT_STATE_REVOKED,
        createdAt: new Date(),
        revokedAt: new Date(),
      },
    };
  }

  /** How many times each request id was sent. */
  sentCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const call of this.deductCalls) for (const item of call.items) counts.set(item.requestId, (counts.get(item.requestId) ?? 0) + 1);
    return counts;
  }
}

export const authorizerDown = () => apiError('AUTHORIZER_UNAVAILABLE', 'the credit authorizer did not answer');

export const declineWith = (reason: DeductDeclineReason) => () => ({
  status: DeductStatus.DEDUCT_STATUS_DECLINED,
  deductionId: '',
  declineReason: reason,
  errorReason: '',
  message: 'declined',
});

export interface TestIssuer {
  ctx: IssuerContext;
  db: Db;
  authorizer: FakeAuthorizer;
  masterKey: Buffer;
  publicKey: KeyObject;
  close(): Promise<void>;
}

/** An issuer context on a fresh SQLite file, or on the database `url` names (a PostgreSQL one from test/helpers/databases.ts). */
export async function openTestIssuer(url?: string): Promise<TestIssuer> {
  const dir = mkdtempSync(join(tmpdir(), 'tapcredit-issuer-'));
  const db = await openDatabase({ url: url ?? join(dir, 'issuer.sqlite'), migrations, migrationsTable: MIGRATIONS_TABLE });
  const masterKey = randomBytes(32);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const authorizer = new FakeAuthorizer();
  const ctx: IssuerContext = {
    db,
    issuerId: ISSUER_ID,
    issuerCode: ISSUER_CODE,
    currencyCode: CURRENCY,
    masterKey,
    signingKey: privateKey,
    authorizer,
    now: () => new Date(),
    log: createLogger('test'),
  };
  return {
    ctx,
    db,
    authorizer,
    masterKey,
    publicKey,
    async close() {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const newCard = (masterKey: Buffer, cardId: string, expiresOn = '2099-12-31'): CardImage =>
  issueCard(masterKey, { cardId, issuerCode: ISSUER_CODE, expiresOn });

/** What the phone app sends: a fresh reading of the card (reader "phone") and the rider. Returns the card as left. */
export function enrollRequest(card: CardImage, requestId: string, accountId = 'acc-1'): { request: EnrollCardRequest; card: CardImage } {
  const read = zeroAmountDebit(card, { terminalId: 'phone', terminalSequence: 0n, terminalRandom: newTerminalRandom() });
  return {
    card: read.card,
    request: {
      requestId,
      card: { issuerCode: card.issuerCode, expiresOn: card.expiresOn, proof: read.proof },
      rider: { ...RIDER },
      accountId,
    },
  };
}

/** A tap as terminal `terminalId` records it: the card's zero-amount debit for that terminal and sequence. */
export function tapOf(
  card: CardImage,
  agreementId: string,
  terminalId: string,
  sequence: number | bigint,
  fare = FARE,
): { tap: Tap; card: CardImage } {
  const read = zeroAmountDebit(card, { terminalId, terminalSequence: BigInt(sequence), terminalRandom: newTerminalRandom() });
  return {
    card: read.card,
    tap: {
      tapId: `${terminalId}:${sequence}`,
      terminalId,
      terminalSequence: String(sequence),
      cardId: card.cardId,
      agreementId,
      fare: money(fare),
      tappedAt: new Date(),
      proof: read.proof,
    },
  };
}

/** `count` consecutive taps of one card at one terminal, from sequence `first`. */
export function tapsOf(card: CardImage, agreementId: string, terminalId: string, first: number, count: number) {
  const taps: Tap[] = [];
  let current = card;
  for (let i = 0; i < count; i++) {
    const next = tapOf(current, agreementId, terminalId, first + i);
    taps.push(next.tap);
    current = next.card;
  }
  return { taps, card: current };
}

export { expectApiError, tableCounts } from '../helpers/assert.js';
