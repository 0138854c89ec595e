// Card enrollment: the phone app proves it read a genuine card, the credit
// authorizer authorizes the rider's account as an agreement, and the issuer
// binds card and agreement and signs the credit flag the phone writes into
// the card.
//
// The enrollment claims the card before it asks the authorizer, so two
// enrollments of one card cannot both create an agreement. An enrollment that
// never completes (the phone gave up, the issuer crashed after the
// authorizer's answer) leaves its claim to expire; the claim is then
// abandoned and the agreement it may have created is revoked by the
// enrollment worker (sweepAbandonedEnrollments).
import { status } from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { CREDIT_FLAG_VERSION, MAC_BYTES, TERMINAL_RANDOM_BYTES, signCreditFlag, verifyCardProof } from '../common/card.js';
import { PHONE_READER_ID } from '../common/card-emulator.js';
import { asText, isUniqueViolation, retryOnUniqueViolation, type Db } from '../common/db.js';
import { ApiError, apiError, requestIdReused } from '../common/errors.js';
import { fingerprint } from '../common/ids.js';
import { Violations } from '../common/validate.js';
import { AuthorizeEnrollmentRequest } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { EnrollCardRequest, type EnrollCardResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import { type IssuerContext } from './context.js';
import { removeReason } from './deny-list.js';

const E164 = /^\+[1-9]\d{6,14}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** "YYYY-MM-DD" naming a real calendar day. */
export function isCalendarDate(value: string): boolean {
  if (!DATE.test(value)) return false;
  const d = new Date(`${value}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === value;
}

function validate(req: EnrollCardRequest): void {
  const v = new Violations();
  v.id('request_id', req.requestId);
  v.id('account_id', req.accountId);
  if (!req.rider) v.add('rider', 'is required');
  else {
    v.text('rider.name', req.rider.name);
    if (!E164.test(req.rider.phoneNumber)) v.add('rider.phone_number', 'must be an E.164 number, e.g. +8613800138000');
  }
  const card = req.card;
  if (!card) v.add('card', 'is required');
  else {
    v.id('card.issuer_code', card.issuerCode);
    if (!isCalendarDate(card.expiresOn)) v.add('card.expires_on', 'must be a date "YYYY-MM-DD"');
    const p = card.proof;
    if (!p) v.add('card.proof', 'is required');
    else {
      v.id('card.proof.card_id', p.cardId);
      v.uint63('card.proof.counter', p.counter);
      v.uint63('card.proof.terminal_sequence', p.terminalSequence);
      if (p.terminalId !== PHONE_READER_ID) v.add('card.proof.terminal_id', `must be "${PHONE_READER_ID}" (the phone app's reader id)`);
      if (p.terminalRandom.length !== TERMINAL_RANDOM_BYTES) v.add('card.proof.terminal_random', `must be ${TERMINAL_RANDOM_BYTES} bytes`);
      if (p.mac.length !== MAC_BYTES) v.add('card.proof.mac', `must be ${MAC_BYTES} bytes`);
    }
  }
  v.throwIfAny();
}

/**
 * What makes two enrollment requests the same: card, rider and account. The
 * proof is left out: it authenticates the call, and a phone retrying after a
 * lost answer reads the card again, which yields a new counter and MAC.
 */
function enrollmentFingerprint(req: EnrollCardRequest): string {
  const { cardId } = req.card!.proof!;
  const proof = { cardId, counter: '0', terminalId: '', terminalSequence: '0', terminalRandom: Buffer.alloc(0), mac: Buffer.alloc(0) };
  return fingerprint(EnrollCardRequest.encode({ ...req, card: { ...req.card!, proof } }).finish());
}

/**
 * The authorizer's request id for an enrollment: derived from the issuer and
 * the phone's request id, so that a retried enrollment is idempotent end to end.
 */
export const authorizerRequestId = (issuerId: string, requestId: string) =>
  'enr-' + createHash('sha256').update(`${issuerId}\0${requestId}`).digest('hex').slice(0, 40);

interface EnrollmentRow {
  request_id: string;
  fingerprint: string;
  card_id: string;
  account_id: string;
  agreement_id: string;
  enrolled_at: string | number;
  flag_version: number;
  flag_issued_at: string | number;
}

function responseFrom(ctx: IssuerContext, row: EnrollmentRow): EnrollCardResponse {
  const enrolledAt = new Date(Number(row.enrolled_at));
  return {
    enrollment: { cardId: row.card_id, accountId: row.account_id, agreementId: row.agreement_id, enrolledAt },
    creditFlag: signCreditFlag(ctx.signingKey, {
      cardId: row.card_id,
      agreementId: row.agreement_id,
      version: Number(row.flag_version),
      issuedAt: new Date(Number(row.flag_issued_at)),
    }),
  };
}

/** The stored response of an earlier request with this id, or REQUEST_ID_REUSED when its payload differed. */
async function earlierResult(ctx: IssuerContext, requestId: string, print: string): Promise<EnrollCardResponse | undefined> {
  const row: EnrollmentRow | undefined = await ctx.db('enrollments').where({ request_id: requestId }).first();
  if (!row) return undefined;
  if (row.fingerprint !== print) throw requestIdReused('request_id', requestId);
  return responseFrom(ctx, row);
}

export async function enrollCard(ctx: IssuerContext, req: EnrollCardRequest): Promise<EnrollCardResponse> {
  validate(req);
  const reading = req.card!;
  const proof = reading.proof!;
  const cardId = proof.cardId;
  if (reading.issuerCode !== ctx.issuerCode) {
    throw apiError('WRONG_ISSUER', `the card was issued by ${JSON.stringify(reading.issuerCode)}, not by this issuer`, { card_id: cardId });
  }
  // Every call, a repeat too, must come from a genuine card in the caller's hands.
  if (!verifyCardProof(ctx.masterKey, proof)) {
    throw apiError('CARD_AUTHENTICATION_FAILED', "the card's proof does not verify: not a genuine card of this issuer", { card_id: cardId });
  }
  const print = enrollmentFingerprint(req);
  const repeat = await earlierResult(ctx, req.requestId, print);
  if (repeat) return repeat;

  const now = ctx.now();
  if (reading.expiresOn < now.toISOString().slice(0, 10)) {
    throw apiError('CARD_EXPIRED', `the card expired on ${reading.expiresOn}`, { card_id: cardId });
  }
  await checkCardEnrollable(ctx, cardId, BigInt(proof.counter));

  const authorize: AuthorizeEnrollmentRequest = {
    requestId: authorizerRequestId(ctx.issuerId, req.requestId),
    issuerId: ctx.issuerId,
    accountId: req.accountId,
    rider: req.rider,
    cardId,
  };
  await claimCard(ctx, cardId, req.requestId, authorize, now.getTime());
  // The authorizer call happens outside any transaction; its request id makes a retry safe.
  let agreement;
  try {
    ({ agreement } = await ctx.authorizer.authorizeEnrollment(authorize));
  } catch (err) {
    // A definite refusal created nothing at the authorizer: free the card. Otherwise the claim stays
    // (an agreement may exist): the phone's retry continues it, or it expires and is swept.
    if (err instanceof ApiError && DEFINITE_REFUSALS.has(err.code)) await releaseClaim(ctx.db, cardId, req.requestId);
    throw err;
  }
  if (!agreement?.agreementId) throw new Error('the authorizer answered AuthorizeEnrollment without an agreement');

  const row: EnrollmentRow = {
    request_id: req.requestId,
    fingerprint: print,
    card_id: cardId,
    account_id: req.accountId,
    agreement_id: agreement.agreementId,
    enrolled_at: String(now.getTime()),
    flag_version: CREDIT_FLAG_VERSION,
    flag_issued_at: String(now.getTime()),
  };
  let unlisted = false;
  try {
    await ctx.db.transaction(async (trx) => {
      // Still ours, or the claim expired meanwhile and its agreement is being revoked.
      const released = await trx('enrollment_claims').where({ card_id: cardId, request_id: req.requestId }).delete();
      if (released === 0) throw enrollmentAbandoned(req.requestId);
      // The enrollment row claims the request id; the card row (or its empty binding) claims the card.
      await trx('enrollments').insert(row);
      const existing = await trx('cards').where({ card_id: cardId }).first('enrollment_request_id');
      if (!existing) {
        await trx('cards').insert({
          card_id: cardId,
          issuer_code: reading.issuerCode,
          expires_on: reading.expiresOn,
          state: 'ENROLLED',
          last_counter: proof.counter,
          enrollment_request_id: req.requestId,
          created_at: String(now.getTime()),
          updated_at: String(now.getTime()),
        });
      } else {
        const bound = await trx('cards')
          .where({ card_id: cardId })
          .whereNull('enrollment_request_id')
          .update({
            issuer_code: reading.issuerCode,
            expires_on: reading.expiresOn,
            state: 'ENROLLED',
            enrollment_request_id: req.requestId,
            updated_at: String(now.getTime()),
          });
        if (bound === 0) throw alreadyEnrolled(cardId);
        await trx('cards').where({ card_id: cardId }).where('last_counter', '<', proof.counter).update({ last_counter: proof.counter });
        // Enrolled again after an unenrollment: the gates take it again (debts, if any, keep it listed).
        unlisted = await removeReason(trx, cardId, 'REVOKED', now.getTime());
      }
    });
  } catch (err) {
    const abandoned = err instanceof ApiError && err.reason === 'ENROLLMENT_ABANDONED';
    if (!isUniqueViolation(err) && !abandoned) throw err;
    // Lost a race: either the same request (answer as a repeat) or another enrollment of this card.
    const raced = await earlierResult(ctx, req.requestId, print);
    if (abandoned && !raced) throw err;
    if (raced) return raced;
    throw alreadyEnrolled(cardId);
  }
  if (unlisted) ctx.denyListFeed?.notify();
  ctx.log.info({ cardId, agreementId: agreement.agreementId }, 'card enrolled');
  return responseFrom(ctx, row);
}

const alreadyEnrolled = (cardId: string) =>
  apiError('CARD_ALREADY_ENROLLED', `card ${cardId} is already enrolled`, { card_id: cardId });

const enrollmentInProgress = (cardId: string) =>
  apiError('ENROLLMENT_IN_PROGRESS', `another enrollment of card ${cardId} is in progress; try again later`, { card_id: cardId });

const enrollmentAbandoned = (requestId: string) =>
  apiError('ENROLLMENT_ABANDONED', `enrollment ${JSON.stringify(requestId)} was abandoned and its agreement revoked; enroll again with a new request id`, {
    request_id: requestId,
  });

/** Authorizer answers after which it holds no agreement for the request. */
const DEFINITE_REFUSALS = new Set<number>([status.INVALID_ARGUMENT, status.NOT_FOUND, status.ALREADY_EXISTS, status.PERMISSION_DENIED, status.FAILED_PRECONDITION]);

/** How long an enrollment holds its card before it counts as abandoned: far beyond a phone's retries of one enrollment. */
export const ENROLLMENT_CLAIM_TTL_MS = 10 * 60_000;

/**
 * Claims the card for this request (renewing its own claim on a retry), or
 * refuses: ENROLLMENT_IN_PROGRESS while another request holds a live claim,
 * ENROLLMENT_ABANDONED for a request whose claim was abandoned. Another
 * request's expired claim is abandoned here, in the same transaction.
 */
async function claimCard(ctx: IssuerContext, cardId: string, requestId: string, authorize: AuthorizeEnrollmentRequest, now: number): Promise<void> {
  const row = {
    card_id: cardId,
    request_id: requestId,
    authorize_request: Buffer.from(AuthorizeEnrollmentRequest.encode(authorize).finish()),
    claimed_at: String(now),
    expires_at: String(now + ENROLLMENT_CLAIM_TTL_MS),
  };
  // A concurrent enrollment of the card may insert its claim first: look again, it is live then.
  await retryOnUniqueViolation(() =>
    ctx.db.transaction(async (trx) => {
        if (await trx('abandoned_enrollments').where({ request_id: requestId }).first('request_id')) throw enrollmentAbandoned(requestId);
        const held = await trx('enrollment_claims').where({ card_id: cardId }).first('request_id', asText(trx, 'expires_at'));
        if (held?.request_id === requestId) {
          await trx('enrollment_claims').where({ card_id: cardId, request_id: requestId }).update({ expires_at: row.expires_at });
          return;
        }
        if (held && Number(held.expires_at) > now) throw enrollmentInProgress(cardId);
        if (held) await abandonClaims(trx, [cardId], now);
        await trx('enrollment_claims').insert(row);
    }),
  );
}

async function releaseClaim(db: Db, cardId: string, requestId: string): Promise<void> {
  await db('enrollment_claims').where({ card_id: cardId, request_id: requestId }).delete();
}

/** Moves the claims of cardIds to the abandoned enrollments (the revocation outbox), inside trx. */
async function abandonClaims(trx: Db, cardIds: string[], now: number): Promise<void> {
  const claims = await trx('enrollment_claims').whereIn('card_id', cardIds).select('card_id', 'request_id', 'authorize_request');
  if (claims.length === 0) return;
  await trx('abandoned_enrollments').insert(
    claims.map((c: { card_id: string; request_id: string; authorize_request: Buffer }) => ({
      request_id: c.request_id,
      card_id: c.card_id,
      authorize_request: c.authorize_request,
      state: 'PENDING',
      abandoned_at: String(now),
    })),
  );
  await trx('enrollment_claims').whereIn('card_id', cardIds).delete();
}

/**
 * One step of the enrollment worker: abandons expired claims, then revokes
 * the agreement each abandoned enrollment may have left at the authorizer.
 * The AuthorizeEnrollment request is replayed as it was first sent (the
 * authorizer answers a repeat with the agreement it made, if it made one),
 * then that agreement is revoked. Rejects when the authorizer cannot be
 * reached (the rows stay PENDING for the next step). Resolves to the number
 * of enrollments settled.
 */
export async function sweepAbandonedEnrollments(ctx: IssuerContext, limit = 100): Promise<number> {
  const now = ctx.now().getTime();
  await ctx.db.transaction(async (trx) => {
    const expired = await trx('enrollment_claims').where('expires_at', '<=', String(now)).limit(limit).select('card_id');
    await abandonClaims(trx, expired.map((c: { card_id: string }) => c.card_id), now);
  });
  const pending = await ctx.db('abandoned_enrollments').where({ state: 'PENDING' }).orderBy('abandoned_at').limit(limit).select('request_id', 'card_id', 'authorize_request');
  for (const a of pending as { request_id: string; card_id: string; authorize_request: Buffer }[]) {
    const authorize = AuthorizeEnrollmentRequest.decode(a.authorize_request);
    let agreementId: string | undefined;
    try {
      agreementId = (await ctx.authorizer.authorizeEnrollment(authorize)).agreement?.agreementId;
    } catch (err) {
      if (!(err instanceof ApiError && DEFINITE_REFUSALS.has(err.code))) throw err;
    }
    if (agreementId) await ctx.authorizer.revokeAgreement({ issuerId: ctx.issuerId, agreementId });
    await ctx.db('abandoned_enrollments')
      .where({ request_id: a.request_id, state: 'PENDING' })
      .update({ state: agreementId ? 'REVOKED' : 'NONE', agreement_id: agreementId ?? null, done_at: String(ctx.now().getTime()) });
    ctx.log.warn({ cardId: a.card_id, requestId: a.request_id, agreementId }, 'abandoned enrollment cleaned up');
  }
  return pending.length;
}

/** Refuses a replayed proof (counter not above the highest seen) and a card that is already bound. */
async function checkCardEnrollable(ctx: IssuerContext, cardId: string, counter: bigint): Promise<void> {
  const card = await ctx.db('cards').where({ card_id: cardId }).first(asText(ctx.db, 'last_counter'), 'enrollment_request_id', 'state');
  if (!card) return;
  if (card.state === 'LOST') {
    throw apiError('CARD_LOST', `card ${cardId} was reported lost and cannot be enrolled again; enroll a new card`, { card_id: cardId });
  }
  if (counter <= BigInt(card.last_counter)) {
    throw apiError('CARD_PROOF_REPLAYED',
      `the card's counter ${counter} is not above the highest seen (${card.last_counter}): read the card again`,
      { card_id: cardId },
    );
  }
  if (card.enrollment_request_id) throw alreadyEnrolled(cardId);
}
