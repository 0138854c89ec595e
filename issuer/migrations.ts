// Schema of the issuer's database. Portable across SQLite and PostgreSQL:
// int64 amounts, counters and epoch-millisecond times are bigInteger columns,
// written as strings and read back as text (see common/db.ts asText).
import type { Migration } from '../common/db.js';

export const MIGRATIONS_TABLE = 'issuer_migrations';

export const migrations: Migration[] = [
  {
    name: '001_cards_enrollments',
    async up(db) {
      // A card known to the issuer; created by its first enrollment, which is
      // also the claim that prevents two concurrent enrollments of one card.
      await db.schema.createTable('cards', (t) => {
        t.string('card_id', 64).primary();
        t.string('issuer_code', 64).notNullable();
        t.string('expires_on', 10).notNullable();
        t.string('state', 16).notNullable();
        // Highest card counter seen (enrollment proof or accepted taps): a
        // proof at or below it is a replay or a clone.
        t.bigInteger('last_counter').notNullable();
        // The current binding; null when the card is not enrolled.
        t.string('enrollment_request_id', 64).nullable();
        t.bigInteger('created_at').notNullable();
        t.bigInteger('updated_at').notNullable();
      });
      // Every binding ever made. Only what the issuer needs is kept: the
      // rider's name and phone are checked by the authorizer and not stored.
      await db.schema.createTable('enrollments', (t) => {
        t.string('request_id', 64).primary();
        t.string('fingerprint', 64).notNullable();
        t.string('card_id', 64).notNullable();
        t.string('account_id', 64).notNullable();
        t.string('agreement_id', 64).notNullable();
        t.bigInteger('enrolled_at').notNullable();
        // The flag is re-signed from these fields on a repeat: Ed25519
        // signatures are deterministic, so the bytes are the same.
        t.integer('flag_version').notNullable();
        t.bigInteger('flag_issued_at').notNullable();
        t.index(['card_id', 'agreement_id']);
      });
    },
  },
  {
    name: '002_taps',
    async up(db) {
      await db.schema.createTable('taps', (t) => {
        // Insertion order: oldest-first draining and newest-first listing.
        t.increments('id').primary();
        t.string('tap_id', 64).notNullable().unique();
        t.string('terminal_id', 64).notNullable();
        t.bigInteger('terminal_sequence').notNullable();
        t.string('card_id', 64).notNullable();
        t.string('agreement_id', 64).notNullable();
        t.string('fare_currency', 3).notNullable();
        t.bigInteger('fare_minor').notNullable();
        t.bigInteger('tapped_at').notNullable();
        // The proof as reported (its card id, terminal id and sequence equal the tap's).
        t.bigInteger('proof_counter').notNullable();
        t.binary('proof_terminal_random').notNullable();
        t.binary('proof_mac').notNullable();
        // sha256 of the encoded Tap: tells a resend from a different tap under the same id.
        t.string('fingerprint', 64).notNullable();
        t.string('state', 16).notNullable();
        t.string('decline_reason', 64).nullable();
        t.string('deduction_id', 64).nullable();
        t.string('settlement_id', 64).nullable();
        t.string('charged_currency', 3).nullable();
        t.bigInteger('charged_minor').nullable();
        t.bigInteger('received_at').notNullable();
        t.bigInteger('updated_at').notNullable();
        t.index(['state', 'id']);
        t.index(['card_id', 'id']);
      });
      await db.schema.createTable('tap_state_changes', (t) => {
        t.increments('id').primary();
        t.string('tap_id', 64).notNullable();
        t.string('state', 16).notNullable();
        t.bigInteger('changed_at').notNullable();
        t.index(['tap_id', 'id']);
      });
    },
  },
  {
    name: '003_settlements',
    async up(db) {
      await db.schema.createTable('settlements', (t) => {
        t.string('settlement_id', 64).primary();
        t.string('fingerprint', 64).notNullable();
        t.string('authorizer_id', 64).notNullable();
        t.string('currency', 3).notNullable();
        t.bigInteger('total_minor').notNullable();
        t.bigInteger('matched_total_minor').notNullable();
        t.integer('mismatched_count').notNullable();
        t.bigInteger('received_at').notNullable();
      });
      // One row per item with its reconciliation outcome, so mismatches stay
      // queryable for the reconciliation desk.
      await db.schema.createTable('settlement_items', (t) => {
        t.increments('id').primary();
        t.string('settlement_id', 64).notNullable();
        t.integer('position').notNullable();
        t.string('tap_id', 64).notNullable();
        t.string('deduction_id', 64).notNullable();
        t.string('amount_currency', 3).notNullable();
        t.bigInteger('amount_minor').notNullable();
        t.string('status', 16).notNullable();
        t.string('reason', 64).nullable();
        t.unique(['settlement_id', 'position']);
        t.index(['status']);
        t.index(['tap_id']);
      });
    },
  },
];
