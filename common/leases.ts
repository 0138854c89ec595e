// Leases on outbox rows, so that several replicas of a service can drain one
// outbox in a shared database. A replica claims a batch by writing its claim
// into claimed_by and claim_expires_at with one conditional UPDATE that only
// touches rows whose lease is free or expired: two replicas never hold the
// same row at once. It then sends the batch and stores the outcome (which
// takes the rows out of the outbox), or releases the rows after a failed
// send so that any replica may retry them at once. The claims of a replica
// that died expire and are taken over; the new holder sends the rows again,
// which is safe because every receiver is idempotent.
//
// On PostgreSQL the candidate rows are also selected FOR UPDATE SKIP LOCKED
// inside the claiming transaction, so concurrent claimers take disjoint
// batches instead of queueing for the same rows. SQLite has one writer (and
// one process per database file), so there is nothing to skip.
//
// Lease times are the replicas' wall clocks: their skew must stay well below
// the lease time (NTP keeps it within milliseconds; the default lease is 30 s).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Knex } from 'knex';
import { chunks, isPostgres, type Db } from './db.js';

/** How long a claim lasts: longer than one send (a call deadline is 10 s) plus storing its outcome. */
export const DEFAULT_CLAIM_TTL_MS = 30_000;

/** Columns a leased outbox table carries (see addLeaseColumns). */
export const CLAIMED_BY = 'claimed_by';
export const CLAIM_EXPIRES_AT = 'claim_expires_at';

/** Adds the lease columns to an outbox table (in a migration). */
export function addLeaseColumns(t: Knex.AlterTableBuilder): void {
  // "<replica>#<claim>": which replica holds the row, and under which claim.
  t.string(CLAIMED_BY, 128).nullable();
  // Epoch ms after which the claim is void and another replica may take the row.
  t.bigInteger(CLAIM_EXPIRES_AT).nullable();
}

/** A name for this process among the replicas of a service: host, pid and a random part (pids repeat across containers). */
export const replicaName = () => `${hostname()}/${process.pid}/${randomBytes(3).toString('hex')}`;

/** Locks the selected rows FOR UPDATE SKIP LOCKED on PostgreSQL (rows another transaction holds are left out); unchanged on SQLite. */
export function skipLocked<Q extends Knex.QueryBuilder>(db: Knex, query: Q): Q {
  return isPostgres(db) ? (query.forUpdate().skipLocked() as Q) : query;
}

/** Restricts a query on a leased table to rows no live claim holds at `now`. */
export function unclaimed<Q extends Knex.QueryBuilder>(query: Q, now: number, table?: string): Q {
  const col = (c: string) => (table ? `${table}.${c}` : c);
  return query.where((q) => q.whereNull(col(CLAIM_EXPIRES_AT)).orWhere(col(CLAIM_EXPIRES_AT), '<=', String(now))) as Q;
}

export interface ClaimSpec {
  /** The outbox table; it has the lease columns. */
  table: string;
  /** Its key column (unique), whose values claim() returns. */
  key: string;
  /** Narrows and orders the table to the rows waiting to be sent (the lease condition is added by claim). */
  candidates: (query: Knex.QueryBuilder) => Knex.QueryBuilder;
  limit: number;
}

export interface Claim {
  /** Written into claimed_by: identifies this claim among all of every replica. */
  token: string;
  /** Keys of the claimed rows, in candidate order. */
  keys: string[];
  expiresAt: number;
}


export interface LeaseOptions {
  /** This replica's name (replicaName() by default). */
  owner?: string;
  /** Lease time (DEFAULT_CLAIM_TTL_MS by default). */
  ttlMs?: number;
  /** Wall clock, epoch ms. */
  now?: () => number;
}

/** One replica's claims on leased outbox tables. */
export class Leases {
  readonly owner: string;
  readonly ttlMs: number;
  private readonly now: () => number;
  private claims = 0;

  constructor(opts: LeaseOptions = {}) {
    this.owner = opts.owner ?? replicaName();
    this.ttlMs = opts.ttlMs ?? DEFAULT_CLAIM_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  /** A new claim: its token and expiry, for rows inserted already claimed (see claim()). */
  newClaim(): Omit<Claim, 'keys'> {
    return { token: `${this.owner}#${++this.claims}`, expiresAt: this.now() + this.ttlMs };
  }

  /** Column values that mark a row as held by claim. */
  static columns(claim: Omit<Claim, 'keys'>): Record<string, string> {
    return { [CLAIMED_BY]: claim.token, [CLAIM_EXPIRES_AT]: String(claim.expiresAt) };
  }

  /** Column values that free a row (set when an outcome is stored, or to release). */
  static readonly free = { [CLAIMED_BY]: null, [CLAIM_EXPIRES_AT]: null };

  /**
   * Claims up to spec.limit free rows within trx (the caller's transaction,
   * so it can change the claimed rows' state in the same commit). Resolves
   * the claim with the keys it got, possibly none.
   */
  async claim(trx: Knex.Transaction, spec: ClaimSpec): Promise<Claim> {
    const claim = this.newClaim();
    const now = this.now();
    const query = spec.candidates(unclaimed(trx(spec.table), now)).limit(spec.limit).select(spec.key);
    const candidates: string[] = (await skipLocked(trx, query)).map((r: Record<string, string>) => r[spec.key]);
    if (candidates.length === 0) return { ...claim, keys: [] };
    let updated = 0;
    for (const part of chunks(candidates)) {
      // Conditional: a row another replica claimed since the select (SQLite, or a lease that expired meanwhile) is not taken.
      updated += await unclaimed(trx(spec.table).whereIn(spec.key, part), now).update(Leases.columns(claim));
    }
    if (updated === candidates.length) return { ...claim, keys: candidates };
    const got = new Set((await trx(spec.table).where(CLAIMED_BY, claim.token).select(spec.key)).map((r: Record<string, string>) => r[spec.key]));
    return { ...claim, keys: candidates.filter((k) => got.has(k)) };
  }

  /** Frees the rows still held by claim (after a failed send), so that any replica may retry them now. */
  async release(db: Db, table: string, key: string, claim: Claim): Promise<void> {
    for (const part of chunks(claim.keys)) {
      await db(table).whereIn(key, part).where(CLAIMED_BY, claim.token).update(Leases.free);
    }
  }
}
