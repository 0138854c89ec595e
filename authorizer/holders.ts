// The account holder's personal identifiers as the authorizer keeps them.
// The authorizer only compares a rider's name and phone number with the
// holder's (a repeated OpenAccount, AuthorizeEnrollment), so it stores
// keyed hashes, HMAC-SHA256 under a server secret (the holder key), of the
// normalized name and of the phone number: a copy of the database alone
// neither shows them nor lets anyone confirm a guess without the key.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../common/db.js';
import { normalizeName, type RiderDetails } from './accounts.js';

/** What the authorizer keeps of a holder: hex HMACs, compared, never shown. */
export interface HolderDigest {
  nameHash: string;
  phoneHash: string;
}

const mac = (key: Buffer, field: string, value: string) => createHmac('sha256', key).update(`${field}\0${value}`, 'utf8').digest('hex');

/** The digest of a rider's details: the name as compared (case and blanks ignored), the phone number exactly. */
export const holderDigest = (key: Buffer, rider: RiderDetails): HolderDigest => ({
  nameHash: mac(key, 'name', normalizeName(rider.name)),
  phoneHash: mac(key, 'phone', rider.phoneNumber),
});

const sameHex = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));

/** True when the rider's digest names the holder (name and phone number). */
export const isHolder = (holder: HolderDigest, rider: HolderDigest) => sameHex(holder.nameHash, rider.nameHash) && sameHex(holder.phoneHash, rider.phoneHash);

/** A holder key for a process that was given none (in-process tests): digests do not survive a restart with it. */
export const ephemeralHolderKey = () => randomBytes(32);

/**
 * Hashes the holder details of accounts opened before holders were hashed
 * (they were stored in clear), then blanks the clear columns. Runs at start,
 * since the migration itself has no access to the key; a no-op afterwards.
 */
export async function hashClearHolders(db: Db, key: Buffer): Promise<number> {
  const rows: { account_id: string; holder_name: string; holder_phone: string }[] = await db('accounts')
    .whereNull('holder_name_hash')
    .select('account_id', 'holder_name', 'holder_phone');
  for (const row of rows) {
    const digest = holderDigest(key, { name: row.holder_name, phoneNumber: row.holder_phone });
    await db('accounts')
      .where({ account_id: row.account_id })
      .update({ holder_name_hash: digest.nameHash, holder_phone_hash: digest.phoneHash, holder_name: '', holder_phone: '' });
  }
  return rows.length;
}
