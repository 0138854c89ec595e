// Read side for operators and riders: a card with its binding, and a card's
// taps with their life cycle, newest first.
import { asText } from '../common/db.js';
import { apiError, invalidArgument } from '../common/errors.js';
import { Violations, pageSize } from '../common/validate.js';
import {
  CardState,
  type Card,
  type GetCardRequest,
  type GetCardResponse,
  type ListCardTapsRequest,
  type ListCardTapsResponse,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import type { IssuerContext } from './context.js';
import { outstandingDebt } from './debts.js';
import { cardReasons, DENY_REASONS } from './deny-list.js';
import { issuerTaps, tapColumns, type TapRow } from './taps.js';

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

export const cardNotFound = (cardId: string) => apiError('CARD_NOT_FOUND', `card ${cardId} is not known to this issuer`, { card_id: cardId });

const CARD_STATES: Record<string, CardState> = {
  ENROLLED: CardState.CARD_STATE_ENROLLED,
  UNENROLLED: CardState.CARD_STATE_UNENROLLED,
  LOST: CardState.CARD_STATE_LOST,
};

export async function getCard(ctx: IssuerContext, req: GetCardRequest): Promise<GetCardResponse> {
  const v = new Violations();
  v.id('card_id', req.cardId);
  v.throwIfAny();
  return { card: await cardView(ctx, req.cardId) };
}

/**
 * For a rider's call: the card must be bound (by its latest enrollment) to
 * the rider's account, else CARD_NOT_FOUND, the very answer an unknown card
 * gets, so card ids cannot be probed. A malformed id is left to the RPC's
 * own validation.
 */
export async function assertRidersCard(db: IssuerContext['db'], cardId: string, accountId: string): Promise<void> {
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(cardId)) return;
  const latest = await db('enrollments').where({ card_id: cardId }).orderBy('enrolled_at', 'desc').first('account_id');
  if (latest?.account_id !== accountId) throw cardNotFound(cardId);
}

/** The card as the API shows it, with its binding, deny-list reasons and debt; NOT_FOUND CARD_NOT_FOUND. */
export async function cardView(ctx: IssuerContext, cardId: string): Promise<Card> {
  const { db } = ctx;
  const card = await db('cards')
    .where({ card_id: cardId })
    .first('card_id', 'issuer_code', 'expires_on', 'state', asText(db, 'last_counter'), 'enrollment_request_id');
  if (!card) throw cardNotFound(cardId);
  const binding = card.enrollment_request_id
    ? await db('enrollments').where({ request_id: card.enrollment_request_id }).first('account_id', 'agreement_id', asText(db, 'enrolled_at'))
    : undefined;
  return {
    cardId: card.card_id,
    issuerCode: card.issuer_code,
    expiresOn: card.expires_on,
    state: CARD_STATES[card.state] ?? CardState.CARD_STATE_UNSPECIFIED,
    enrollment: binding && {
      cardId: card.card_id,
      accountId: binding.account_id,
      agreementId: binding.agreement_id,
      enrolledAt: new Date(Number(binding.enrolled_at)),
    },
    lastCounter: card.last_counter,
    denyListReasons: (await cardReasons(db, cardId)).map((r) => DENY_REASONS[r]),
    outstandingDebt: { currencyCode: ctx.currencyCode, minorUnits: (await outstandingDebt(db, cardId)).toString() },
  };
}

// Page tokens are opaque to clients: the card they belong to and the last row position seen.
const encodeToken = (cardId: string, lastId: number) => Buffer.from(JSON.stringify({ c: cardId, k: lastId })).toString('base64url');

function decodeToken(cardId: string, token: string): number {
  try {
    const { c, k } = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (c === cardId && Number.isSafeInteger(k) && k > 0) return k;
  } catch {
    // falls through to the error below
  }
  throw invalidArgument([{ field: 'page_token', description: 'is not a token from a previous page of this card' }]);
}

/**
 * A card's taps, newest first. A card is known once it was enrolled or a tap
 * named it (taps of unenrolled cards are kept, REJECTED, for audit).
 */
export async function listCardTaps(ctx: IssuerContext, req: ListCardTapsRequest): Promise<ListCardTapsResponse> {
  const v = new Violations();
  v.id('card_id', req.cardId);
  const size = pageSize(v, req.pageSize, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
  v.throwIfAny();
  const after = req.pageToken ? decodeToken(req.cardId, req.pageToken) : undefined;
  const { db } = ctx;
  const query = db('taps').where({ card_id: req.cardId }).orderBy('id', 'desc').limit(size + 1).select(tapColumns(db));
  if (after !== undefined) query.where('id', '<', after);
  const rows: TapRow[] = await query;
  if (rows.length === 0 && after === undefined && !(await db('cards').where({ card_id: req.cardId }).first('card_id'))) {
    throw cardNotFound(req.cardId);
  }
  const page = rows.slice(0, size);
  return {
    taps: await issuerTaps(db, page),
    nextPageToken: rows.length > size ? encodeToken(req.cardId, Number(page[page.length - 1].id)) : '',
  };
}
