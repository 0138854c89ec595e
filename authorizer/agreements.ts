// Agreements: a rider's account authorized to pay for one issuer's card.
// Granted by AuthorizeEnrollment after the account checks; fares are debited
// only under an active agreement of the issuer that asks.
import { retryOnUniqueViolation, toNumber, type Db } from '../common/db.js';
import { apiError, requestIdReused } from '../common/errors.js';
import { newId } from '../common/ids.js';
import { getAccount } from './accounts.js';
import { isHolder, type HolderDigest } from './holders.js';

export type AgreementState = 'ACTIVE' | 'REVOKED';

export interface AgreementView {
  agreementId: string;
  accountId: string;
  issuerId: string;
  cardId: string;
  state: AgreementState;
  createdAt: Date;
  revokedAt: Date | undefined;
}

const toView = (row: any): AgreementView => ({
  agreementId: row.agreement_id,
  accountId: row.account_id,
  issuerId: row.issuer_id,
  cardId: row.card_id,
  state: row.state,
  createdAt: new Date(toNumber(row.created_at)),
  revokedAt: row.revoked_at == null ? undefined : new Date(toNumber(row.revoked_at)),
});

export interface EnrollmentInput {
  requestId: string;
  /** Fingerprint of the whole request: tells a true repeat from a reused request id. */
  fingerprint: string;
  issuerId: string;
  accountId: string;
  /** The rider's details as keyed hashes, compared with the holder's. */
  rider: HolderDigest;
  cardId: string;
}

/**
 * Authorizes the rider's account for the issuer's card and registers an
 * agreement. A refusal stores nothing, so a corrected retry with the same
 * request id is evaluated afresh; a granted request returns its agreement.
 */
export async function authorizeEnrollment(db: Db, input: EnrollmentInput, now = Date.now()): Promise<AgreementView> {
  return retryOnUniqueViolation(() =>
    db.transaction(async (trx) => {
      const granted = await trx('agreements').where({ request_id: input.requestId }).first();
      if (granted) {
        if (granted.fingerprint !== input.fingerprint) throw requestIdReused('request_id', input.requestId);
        return toView(granted);
      }
      const account = await getAccount(trx, input.accountId);
      const meta = { account_id: input.accountId };
      if (!isHolder(account.holder, input.rider)) {
        throw apiError('RIDER_MISMATCH', `the rider's details do not match the holder of account ${input.accountId}`, meta);
      }
      if (account.state !== 'ACTIVE') throw apiError('ACCOUNT_FROZEN', `account ${input.accountId} is frozen`, meta);
      // Eligibility: the account must be able to pay at least something now.
      if (account.available <= 0n) {
        throw apiError('ACCOUNT_NOT_ELIGIBLE', `account ${input.accountId} has no funds or credit available`, meta);
      }
      const row = {
        agreement_id: newId('agr'),
        request_id: input.requestId,
        fingerprint: input.fingerprint,
        account_id: input.accountId,
        issuer_id: input.issuerId,
        card_id: input.cardId,
        state: 'ACTIVE',
        created_at: now,
      };
      await trx('agreements').insert(row);
      return toView(row);
    }),
  );
}

/** The agreement, or NOT_FOUND AGREEMENT_NOT_FOUND. */
export async function getAgreement(db: Db, agreementId: string): Promise<AgreementView> {
  const row = await db('agreements').where({ agreement_id: agreementId }).first();
  if (!row) throw apiError('AGREEMENT_NOT_FOUND', `agreement ${JSON.stringify(agreementId)} does not exist`, { agreement_id: agreementId });
  return toView(row);
}

/**
 * Revokes an agreement: debits of rides taken from now on are declined
 * AGREEMENT_REVOKED, earlier rides stay payable. Idempotent: the first
 * revocation time is kept. With issuerId, another issuer's agreement is
 * reported as not found.
 */
export async function revokeAgreement(db: Db, agreementId: string, now = Date.now(), issuerId?: string): Promise<AgreementView> {
  const agreement = await getAgreement(db, agreementId);
  if (issuerId !== undefined && agreement.issuerId !== issuerId) {
    throw apiError('AGREEMENT_NOT_FOUND', `agreement ${JSON.stringify(agreementId)} does not exist`, { agreement_id: agreementId });
  }
  await db('agreements').where({ agreement_id: agreementId, state: 'ACTIVE' }).update({ state: 'REVOKED', revoked_at: now });
  return getAgreement(db, agreementId);
}
