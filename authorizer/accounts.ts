// Riders' payment accounts: opening (idempotent by account id), top-ups
// (idempotent by request id), freezing, and reading balances and entries.
import { asText, retryOnUniqueViolation, toNumber, type Db } from '../common/db.js';
import { apiError, invalidArgument, requestIdReused } from '../common/errors.js';
import { newId } from '../common/ids.js';
import type { HolderDigest } from './holders.js';
import { LedgerBook, entriesOf, ledgerAccountId, type LedgerEntryView } from './ledger.js';

export type AccountState = 'ACTIVE' | 'FROZEN';

export interface RiderDetails {
  name: string;
  phoneNumber: string;
}

export interface AccountView {
  accountId: string;
  /** Keyed hashes of the holder's name and phone (authorizer/holders.ts). */
  holder: HolderDigest;
  state: AccountState;
  currency: string;
  balance: bigint;
  creditLimit: bigint;
  /** balance + creditLimit: what a debit may take now. */
  available: bigint;
  openedAt: Date;
}

/** A name as compared: case-insensitive, surrounding and repeated blanks ignored. */
export const normalizeName = (name: string) => name.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();

const accountColumns = (db: Db) => [
  'a.account_id',
  'a.holder_name_hash',
  'a.holder_phone_hash',
  'a.state',
  'a.currency',
  'a.opened_at',
  asText(db, 'l.balance', 'balance'),
  asText(db, 'l.credit_limit', 'credit_limit'),
];

function toAccountView(row: any): AccountView {
  const balance = BigInt(row.balance);
  const creditLimit = BigInt(row.credit_limit);
  return {
    accountId: row.account_id,
    holder: { nameHash: row.holder_name_hash, phoneHash: row.holder_phone_hash },
    state: row.state,
    currency: row.currency,
    balance,
    creditLimit,
    available: balance + creditLimit,
    openedAt: new Date(toNumber(row.opened_at)),
  };
}

/** The account, or undefined. */
export async function findAccount(db: Db, accountId: string): Promise<AccountView | undefined> {
  const row = await db('accounts as a')
    .join('ledger_accounts as l', 'l.ledger_account_id', 'a.ledger_account_id')
    .where('a.account_id', accountId)
    .first(accountColumns(db));
  return row ? toAccountView(row) : undefined;
}

/** The account, or NOT_FOUND ACCOUNT_NOT_FOUND. */
export async function getAccount(db: Db, accountId: string): Promise<AccountView> {
  const account = await findAccount(db, accountId);
  if (!account) throw apiError('ACCOUNT_NOT_FOUND', `account ${JSON.stringify(accountId)} does not exist`, { account_id: accountId });
  return account;
}

export interface OpenAccountInput {
  accountId: string;
  holder: HolderDigest;
  currency: string;
  creditLimit: bigint;
}

/** Opens an account; opening it again with the same details returns it, with other details is ALREADY_EXISTS. */
export async function openAccount(db: Db, input: OpenAccountInput, now = Date.now()): Promise<AccountView> {
  return retryOnUniqueViolation(() =>
    db.transaction(async (trx) => {
      const existing = await findAccount(trx, input.accountId);
      if (existing) {
        const same =
          existing.holder.nameHash === input.holder.nameHash &&
          existing.holder.phoneHash === input.holder.phoneHash &&
          existing.currency === input.currency &&
          existing.creditLimit === input.creditLimit;
        if (same) return existing;
        throw apiError('ACCOUNT_ALREADY_EXISTS', `account ${JSON.stringify(input.accountId)} already exists with other details`, {
          account_id: input.accountId,
        });
      }
      const ledgerId = ledgerAccountId.rider(input.accountId);
      await trx('ledger_accounts').insert({
        ledger_account_id: ledgerId,
        kind: 'RIDER',
        currency: input.currency,
        balance: '0',
        credit_limit: input.creditLimit.toString(),
        created_at: now,
      });
      await trx('accounts').insert({
        account_id: input.accountId,
        ledger_account_id: ledgerId,
        // The clear columns of the first schema stay empty: only keyed hashes are kept.
        holder_name: '',
        holder_phone: '',
        holder_name_hash: input.holder.nameHash,
        holder_phone_hash: input.holder.phoneHash,
        state: 'ACTIVE',
        currency: input.currency,
        opened_at: now,
      });
      return (await findAccount(trx, input.accountId))!;
    }),
  );
}

export interface TopUpInput {
  requestId: string;
  /** Fingerprint of the whole request: tells a true repeat from a reused request id. */
  fingerprint: string;
  accountId: string;
  amount: bigint;
  currency: string;
}

export interface TopUpResult {
  /** The account as the top-up left it. */
  account: AccountView;
  transferId: string;
}

/** Credits an account from the top-up funding account; a repeat returns the first result. */
export async function topUp(db: Db, input: TopUpInput, now = Date.now()): Promise<TopUpResult> {
  return retryOnUniqueViolation(() =>
    db.transaction(async (trx) => {
      const claimed = await trx('top_ups').where({ request_id: input.requestId }).first();
      if (claimed) {
        if (claimed.fingerprint !== input.fingerprint) throw requestIdReused('request_id', input.requestId);
        const account = await getAccount(trx, claimed.account_id);
        const entry = await trx('ledger_entries')
          .where({ transfer_id: claimed.transfer_id, ledger_account_id: ledgerAccountId.rider(claimed.account_id) })
          .first(asText(trx, 'balance_after'));
        const balance = BigInt(entry.balance_after);
        return { account: { ...account, balance, available: balance + account.creditLimit }, transferId: claimed.transfer_id };
      }
      const account = await getAccount(trx, input.accountId);
      if (account.currency !== input.currency) {
        throw apiError('CURRENCY_MISMATCH', `account ${input.accountId} is in ${account.currency}, not ${input.currency}`, {
          account_id: input.accountId,
        });
      }
      const rider = ledgerAccountId.rider(input.accountId);
      const funding = ledgerAccountId.topUpFunding(input.currency);
      const book = new LedgerBook(trx);
      await book.load([rider, funding]);
      book.useSystemAccount(funding, 'TOP_UP_FUNDING', input.currency, now);
      const transferId = newId('top');
      const posted = book.post({
        transferId,
        kind: 'TOP_UP',
        debitAccountId: funding,
        creditAccountId: rider,
        amount: input.amount,
        currency: input.currency,
        reference: input.requestId,
        bookedAt: now,
      });
      await book.flush();
      await trx('top_ups').insert({ request_id: input.requestId, fingerprint: input.fingerprint, account_id: input.accountId, transfer_id: transferId });
      const balance = posted.creditBalanceAfter;
      return { account: { ...account, balance, available: balance + account.creditLimit }, transferId };
    }),
  );
}

/** Freezes or reactivates an account. */
export async function setAccountState(db: Db, accountId: string, state: AccountState): Promise<AccountView> {
  return db.transaction(async (trx) => {
    await getAccount(trx, accountId);
    await trx('accounts').where({ account_id: accountId }).update({ state });
    return getAccount(trx, accountId);
  });
}

export interface EntryPage {
  entries: LedgerEntryView[];
  nextPageToken: string;
}

// A page token names the account and the last entry returned, so a token is
// only honoured for the account it was issued for.
const encodeToken = (accountId: string, seq: number) => Buffer.from(JSON.stringify({ a: accountId, s: seq })).toString('base64url');

function decodeToken(accountId: string, token: string): number {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (parsed.a === accountId && Number.isSafeInteger(parsed.s)) return parsed.s;
  } catch {
    // falls through to the error below
  }
  throw invalidArgument([{ field: 'page_token', description: 'is not a page token of this listing' }]);
}

/** An account's ledger entries, newest first, pageSize at a time. */
export async function listLedgerEntries(db: Db, accountId: string, pageSize: number, pageToken: string): Promise<EntryPage> {
  const beforeSeq = pageToken ? decodeToken(accountId, pageToken) : undefined;
  await getAccount(db, accountId);
  const rows = await entriesOf(db, ledgerAccountId.rider(accountId), { limit: pageSize + 1, beforeSeq });
  const entries = rows.slice(0, pageSize);
  const nextPageToken = rows.length > pageSize ? encodeToken(accountId, entries[entries.length - 1].seq) : '';
  return { entries, nextPageToken };
}
