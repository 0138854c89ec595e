// Ending a card's binding: the rider unenrolls it (listed REVOKED; it can be
// enrolled again) or reports it lost (listed LOST for good; the rider enrolls
// a new card on the same account). Either way the issuer first revokes the
// agreement at the credit authorizer, then, in one transaction, ends the
// binding and lists the card. The authorizer call is idempotent, so a call
// that failed half way is simply repeated; rides taken before the revocation
// are still debited under the old agreement.
import { apiError } from '../common/errors.js';
import { Violations } from '../common/validate.js';
import type {
  ReportCardLostRequest,
  ReportCardLostResponse,
  UnenrollCardRequest,
  UnenrollCardResponse,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import { cardNotFound, cardView } from './cards.js';
import type { IssuerContext } from './context.js';
import { addReason } from './deny-list.js';

interface CardBinding {
  state: 'ENROLLED' | 'UNENROLLED' | 'LOST';
  enrollmentRequestId: string | null;
  /** The current binding, or the last one when the card is no longer enrolled. */
  accountId: string;
  agreementId: string;
}

async function binding(ctx: IssuerContext, cardId: string): Promise<CardBinding> {
  const card = await ctx.db('cards').where({ card_id: cardId }).first('state', 'enrollment_request_id');
  if (!card) throw cardNotFound(cardId);
  const enrollment = card.enrollment_request_id
    ? await ctx.db('enrollments').where({ request_id: card.enrollment_request_id }).first('account_id', 'agreement_id')
    : await ctx.db('enrollments').where({ card_id: cardId }).orderBy('enrolled_at', 'desc').first('account_id', 'agreement_id');
  return { state: card.state, enrollmentRequestId: card.enrollment_request_id, accountId: enrollment.account_id, agreementId: enrollment.agreement_id };
}

function validate(req: { cardId: string; accountId: string }): void {
  const v = new Violations();
  v.id('card_id', req.cardId);
  v.id('account_id', req.accountId);
  v.throwIfAny();
}

/** The caller must name the account the card is bound to: a light proof that it is the rider's card. */
function checkAccount(b: CardBinding, cardId: string, accountId: string): void {
  if (b.accountId !== accountId) {
    throw apiError('ACCOUNT_MISMATCH', `card ${cardId} is not bound to account ${accountId}`, { card_id: cardId });
  }
}

async function endBinding(ctx: IssuerContext, cardId: string, b: CardBinding, state: 'UNENROLLED' | 'LOST', reason: 'REVOKED' | 'LOST'): Promise<void> {
  await ctx.authorizer.revokeAgreement({ issuerId: ctx.issuerId, agreementId: b.agreementId });
  const now = ctx.now().getTime();
  const listed = await ctx.db.transaction(async (trx) => {
    await trx('cards').where({ card_id: cardId }).update({ state, enrollment_request_id: null, updated_at: String(now) });
    return addReason(trx, cardId, reason, now);
  });
  if (listed) ctx.denyListFeed?.notify();
  ctx.log.info({ cardId, agreementId: b.agreementId, state, reason }, 'card binding ended');
}

export async function unenrollCard(ctx: IssuerContext, req: UnenrollCardRequest): Promise<UnenrollCardResponse> {
  validate(req);
  const b = await binding(ctx, req.cardId);
  checkAccount(b, req.cardId, req.accountId);
  if (b.state === 'LOST') {
    throw apiError('CARD_LOST', `card ${req.cardId} was reported lost`, { card_id: req.cardId });
  }
  if (b.state === 'ENROLLED') await endBinding(ctx, req.cardId, b, 'UNENROLLED', 'REVOKED');
  return { card: await cardView(ctx, req.cardId) };
}

export async function reportCardLost(ctx: IssuerContext, req: ReportCardLostRequest): Promise<ReportCardLostResponse> {
  validate(req);
  const b = await binding(ctx, req.cardId);
  checkAccount(b, req.cardId, req.accountId);
  if (b.state !== 'LOST') await endBinding(ctx, req.cardId, b, 'LOST', 'LOST');
  return { card: await cardView(ctx, req.cardId) };
}
