// Card enrollment: the phone app proves it read a genuine card, the credit
// authorizer authorizes the rider's account as an agreement, and the issuer
// binds card and agreement and signs the credit flag the phone writes into
// the card.
import { isUniqueViolation } from '../common/db.js';
import { createHash } from 'node:crypto';
import { CREDIT_FLAG_VERSION, MAC_BYTES, TERMINAL_RANDOM_BYTES, signCreditFlag, verifyCardProof } from '../common/card.js';
import { PHONE_READER_ID } from '../common/card-emulator.js';
import { asText } from '../common/db.js';
import { failedPrecondition, requestIdReused } from '../common/errors.js';
import { fingerprint } from '../common/ids.js';
import { Violations } from '../common/validate.js';
import { EnrollCardRequest, type EnrollCardResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import { type IssuerContext } from './context.js';
import { removeReason } from './deny-list.js';

const E164 = /^\+[1-9]\d{6,14}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const UINT63_MAX = 2n ** 63n - 1n;

/** "YYYY-MM-DD" naming a real calendar day. */
export function isCalendarDate(value: string): boolean {
  if (!DATE.test(value)) return false;
  const d = new Date(`${value}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === value;
}

/** A uint64 carried as a decimal string, within what a bigInteger column holds. */
export function parseUint63(v: Violations, field: string, value: string): bigint | undefined {
  let n: bigint;
  try {
    n = BigInt(value);
  } catch {
    v.add(field, 'must be an integer');
    return undefined;
  }
  if (n < 0n || n > UINT63_MAX) {
    v.add(field, 'must be between 0 and 2^63-1');
    return undefined;
  }
  return n;
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
      parseUint63(v, 'card.proof.counter', p.counter);
      parseUint63(v, 'card.proof.terminal_sequence', p.terminalSequence);
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
    throw failedPrecondition('WRONG_ISSUER', `the card was issued by ${JSON.stringify(reading.issuerCode)}, not by this issuer`, { card_id: cardId });
  }
  // Every call, a repeat too, must come from a genuine card in the caller's hands.
  if (!verifyCardProof(ctx.masterKey, proof)) {
    throw failedPrecondition('CARD_AUTHENTICATION_FAILED', "the card's proof does not verify: not a genuine card of this issuer", { card_id: cardId });
  }
  const print = enrollmentFingerprint(req);
  const repeat = await earlierResult(ctx, req.requestId, print);
  if (repeat) return repeat;

  const now = ctx.now();
  if (reading.expiresOn < now.toISOString().slice(0, 10)) {
    throw failedPrecondition('CARD_EXPIRED', `the card expired on ${reading.expiresOn}`, { card_id: cardId });
  }
  await checkCardEnrollable(ctx, cardId, BigInt(proof.counter));

  // The authorizer call happens outside any transaction; its request id makes a retry safe.
  const { agreement } = await ctx.authorizer.authorizeEnrollment({
    requestId: authorizerRequestId(ctx.issuerId, req.requestId),
    issuerId: ctx.issuerId,
    accountId: req.accountId,
    rider: req.rider,
    cardId,
  });
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
    if (!isUniqueViolation(err)) throw err;
    // Lost a race: either the same request (answer as a repeat) or another enrollment of this card.
    const raced = await earlierResult(ctx, req.requestId, print);
    if (raced) return raced;
    throw alreadyEnrolled(cardId);
  }
  if (unlisted) ctx.denyListFeed?.notify();
  ctx.log.info({ cardId, agreementId: agreement.agreementId }, 'card enrolled');
  return responseFrom(ctx, row);
}

const alreadyEnrolled = (cardId: string) =>
  failedPrecondition('CARD_ALREADY_ENROLLED', `card ${cardId} is already enrolled`, { card_id: cardId });

/** Refuses a replayed proof (counter not above the highest seen) and a card that is already bound. */
async function checkCardEnrollable(ctx: IssuerContext, cardId: string, counter: bigint): Promise<void> {
  const card = await ctx.db('cards').where({ card_id: cardId }).first(asText(ctx.db, 'last_counter'), 'enrollment_request_id', 'state');
  if (!card) return;
  if (card.state === 'LOST') {
    throw failedPrecondition('CARD_LOST', `card ${cardId} was reported lost and cannot be enrolled again; enroll a new card`, { card_id: cardId });
  }
  if (counter <= BigInt(card.last_counter)) {
    throw failedPrecondition(
      'CARD_PROOF_REPLAYED',
      `the card's counter ${counter} is not above the highest seen (${card.last_counter}): read the card again`,
      { card_id: cardId },
    );
  }
  if (card.enrollment_request_id) throw alreadyEnrolled(cardId);
}
