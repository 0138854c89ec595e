// Schema of the authorizer: rider accounts on a double-entry ledger, the
// agreements granted to issuers, the deductions (one row per fare request id)
// and the settlement outbox. Money and balances are bigInteger minor units;
// times are bigInteger epoch milliseconds.
import { createAuditTable } from '../common/audit.js';
import type { Migration } from '../common/db.js';
import { addLeaseColumns } from '../common/leases.js';

export const migrations: Migration[] = [
  {
    name: '001_ledger_accounts_and_riders',
    async up(db) {
      // Every account of the ledger: riders' accounts and the system accounts
      // (top-up funding, payable to an issuer, paid to an issuer).
      await db.schema.createTable('ledger_accounts', (t) => {
        t.string('ledger_account_id', 160).primary();
        t.string('kind', 32).notNullable(); // RIDER, TOP_UP_FUNDING, ISSUER_PAYABLE, ISSUER_PAID
        t.string('currency', 3).notNullable();
        t.bigInteger('balance').notNullable().defaultTo(0);
        // How far below zero the balance may go; NULL for system accounts,
        // which carry the other side of riders' money and have no floor.
        t.bigInteger('credit_limit').nullable();
        t.bigInteger('created_at').notNullable();
        // The database refuses a balance below the floor even if code had a bug.
        t.check('credit_limit IS NULL OR balance + credit_limit >= 0', [], 'ledger_accounts_within_credit_limit');
      });

      await db.schema.createTable('accounts', (t) => {
        t.string('account_id', 64).primary();
        t.string('ledger_account_id', 160).notNullable().unique().references('ledger_account_id').inTable('ledger_accounts');
        t.string('holder_name', 200).notNullable();
        t.string('holder_phone', 32).notNullable();
        t.string('state', 16).notNullable(); // ACTIVE, FROZEN
        t.string('currency', 3).notNullable();
        t.bigInteger('opened_at').notNullable();
      });

      await db.schema.createTable('transfers', (t) => {
        t.string('transfer_id', 64).primary();
        t.string('kind', 16).notNullable(); // TOP_UP, FARE, SETTLEMENT
        t.string('debit_account_id', 160).notNullable().references('ledger_account_id').inTable('ledger_accounts');
        t.string('credit_account_id', 160).notNullable().references('ledger_account_id').inTable('ledger_accounts');
        t.bigInteger('amount').notNullable();
        t.string('currency', 3).notNullable();
        t.string('reference', 128).notNullable();
        t.bigInteger('booked_at').notNullable();
      });

      await db.schema.createTable('ledger_entries', (t) => {
        // Insertion order: newest-first listing and paging use it.
        t.increments('seq').primary();
        t.string('entry_id', 80).notNullable().unique();
        t.string('transfer_id', 64).notNullable().references('transfer_id').inTable('transfers');
        t.string('ledger_account_id', 160).notNullable().references('ledger_account_id').inTable('ledger_accounts');
        t.string('kind', 16).notNullable();
        t.bigInteger('amount').notNullable(); // signed: positive credits the account
        t.bigInteger('balance_after').notNullable();
        t.string('currency', 3).notNullable();
        t.string('reference', 128).notNullable();
        t.bigInteger('booked_at').notNullable();
        t.index(['ledger_account_id', 'seq']);
        t.index(['transfer_id']);
      });

      // Claimed top-up request ids: a repeat returns the first transfer.
      await db.schema.createTable('top_ups', (t) => {
        t.string('request_id', 64).primary();
        t.string('fingerprint', 64).notNullable();
        t.string('account_id', 64).notNullable().references('account_id').inTable('accounts');
        t.string('transfer_id', 64).notNullable().references('transfer_id').inTable('transfers');
      });
    },
  },
  {
    name: '002_agreements',
    async up(db) {
      await db.schema.createTable('agreements', (t) => {
        t.string('agreement_id', 64).primary();
        // The enrollment request that granted it: its idempotency key.
        t.string('request_id', 64).notNullable().unique();
        t.string('fingerprint', 64).notNullable();
        t.string('account_id', 64).notNullable().references('account_id').inTable('accounts');
        t.string('issuer_id', 64).notNullable();
        t.string('card_id', 64).notNullable();
        t.string('state', 16).notNullable(); // ACTIVE, REVOKED
        t.bigInteger('created_at').notNullable();
        t.index(['issuer_id', 'card_id']);
      });
    },
  },
  {
    name: '003_deductions_and_settlements',
    async up(db) {
      await db.schema.createTable('settlements', (t) => {
        t.string('settlement_id', 64).primary();
        t.string('issuer_id', 64).notNullable();
        t.string('currency', 3).notNullable();
        t.bigInteger('total').notNullable();
        t.integer('item_count').notNullable();
        t.string('state', 16).notNullable(); // PENDING (to send), ACKNOWLEDGED
        t.integer('attempts').notNullable().defaultTo(0);
        t.string('last_error', 500).nullable();
        t.bigInteger('matched_total').nullable();
        t.integer('mismatched_count').nullable();
        t.string('transfer_id', 64).nullable().references('transfer_id').inTable('transfers');
        t.bigInteger('created_at').notNullable();
        t.bigInteger('acknowledged_at').nullable();
        t.index(['state', 'issuer_id']);
      });

      // One row per fare request id (the tap id), DEBITED or DECLINED; a
      // REJECTED item is never stored.
      await db.schema.createTable('deductions', (t) => {
        t.increments('seq').primary();
        t.string('request_id', 64).notNullable().unique();
        t.string('issuer_id', 64).notNullable();
        t.string('agreement_id', 64).notNullable().references('agreement_id').inTable('agreements');
        t.string('account_id', 64).notNullable().references('account_id').inTable('accounts');
        t.bigInteger('amount').notNullable();
        t.string('currency', 3).notNullable();
        t.bigInteger('tapped_at').nullable();
        t.string('status', 16).notNullable(); // DEBITED, DECLINED
        // The FARE transfer when DEBITED: deduction id = transfer id.
        t.string('deduction_id', 64).nullable().unique().references('transfer_id').inTable('transfers');
        t.string('decline_reason', 32).nullable();
        t.string('message', 300).notNullable().defaultTo('');
        t.bigInteger('created_at').notNullable();
        // Settlement outbox: NULL until a settlement batch takes the deduction.
        t.string('settlement_id', 64).nullable().references('settlement_id').inTable('settlements');
        t.string('settlement_status', 16).nullable(); // MATCHED, MISMATCHED: the issuer's answer
        t.string('settlement_reason', 64).nullable();
        t.index(['issuer_id', 'status', 'settlement_id']);
        t.index(['settlement_id']);
      });
    },
  },
  {
    name: '004_risk_revocation_and_debt_retries',
    async up(db) {
      // When an agreement was revoked: fares of rides taken before stay debitable.
      await db.schema.alterTable('agreements', (t) => {
        t.bigInteger('revoked_at').nullable();
      });
      await db.schema.alterTable('deductions', (t) => {
        // The tap a debit pays for: the request id of a first debit, the same
        // tap under a new request id for each retry of a debt. NULL on rows
        // written before this migration (the request id is the tap id there).
        t.string('tap_id', 64).nullable();
        // Set only while DEBITED: the database refuses a second successful
        // debit of one tap whatever request id it came under.
        t.string('debited_tap_id', 64).nullable().unique();
      });
    },
  },
  {
    name: '005_security_holder_hashes',
    async up(db) {
      // Keyed hashes of the holder's name and phone (authorizer/holders.ts)
      // replace the clear columns, which new rows leave empty. Rows written
      // before are hashed at start (hashClearHolders), where the key is known.
      await db.schema.alterTable('accounts', (t) => {
        t.string('holder_name_hash', 64).nullable();
        t.string('holder_phone_hash', 64).nullable();
      });
    },
  },
  {
    name: '006_scale_settlement_leases',
    async up(db) {
      // Leases (common/leases.ts): several authorizer replicas send the
      // pending settlements of one database, each held by one replica at a time.
      await db.schema.alterTable('settlements', (t) => addLeaseColumns(t));
    },
  },
  {
    name: '007_security_rider_sign_in',
    async up(db) {
      // A rider's sign-in password, as an scrypt hash (authorizer/passwords.ts).
      await db.schema.createTable('rider_credentials', (t) => {
        t.string('account_id', 64).primary().references('account_id').inTable('accounts');
        t.string('password_hash', 200).notNullable();
        t.bigInteger('set_at').notNullable();
      });
      // Refresh tokens, kept as SHA-256 of the token (authorizer/sign-in.ts).
      // One family per sign-in: each refresh uses its token up and adds the
      // next; a used token seen again revokes the family.
      await db.schema.createTable('refresh_tokens', (t) => {
        t.string('token_hash', 64).primary();
        t.string('family_id', 64).notNullable();
        t.string('account_id', 64).notNullable().references('account_id').inTable('accounts');
        t.bigInteger('created_at').notNullable();
        t.bigInteger('expires_at').notNullable();
        t.bigInteger('used_at').nullable();
        t.bigInteger('revoked_at').nullable();
        t.index(['family_id']);
      });
      // Ed25519 keys that sign access tokens (authorizer/signing-keys.ts):
      // the newest unretired one signs; every unretired one is published.
      await db.schema.createTable('signing_keys', (t) => {
        t.string('key_id', 64).primary();
        t.text('private_jwk').notNullable();
        t.text('public_jwk').notNullable();
        t.bigInteger('created_at').notNullable();
        t.bigInteger('retired_at').nullable();
      });
    },
  },
  {
    name: '008_security_audit_trail',
    // The audit trail of ops calls (common/audit.ts).
    up: (db) => createAuditTable(db),
  },
];

export const MIGRATIONS_TABLE = 'authorizer_migrations';
