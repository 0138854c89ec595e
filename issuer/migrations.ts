// Schema of the issuer's database. Portable across SQLite and PostgreSQL:
// int64 amounts, counters and epoch-millisecond times are bigInteger columns,
// written as strings and read back as text (see common/db.ts asText).
import { createAuditTable } from '../common/audit.js';
import type { Migration } from '../common/db.js';
import { addLeaseColumns } from '../common/leases.js';

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
  {
    name: '004_risk_deny_list_debts_caps_clones',
    async up(db) {
      // The deny list: a card's current reasons, and the append-only log of
      // changes that terminals follow by version.
      await db.schema.createTable('deny_list_entries', (t) => {
        t.string('card_id', 64).notNullable();
        t.string('reason', 16).notNullable(); // DEBT, LOST, REVOKED, CLONED
        t.bigInteger('listed_at').notNullable();
        t.primary(['card_id', 'reason']);
      });
      await db.schema.createTable('deny_list_changes', (t) => {
        // Assigned from deny_list_head inside the writing transaction, so
        // versions are gap-free and committed in order (the head row is the lock).
        t.bigInteger('version').primary();
        t.string('card_id', 64).notNullable();
        t.string('action', 8).notNullable(); // ADD, REMOVE
        t.string('reason', 16).notNullable();
        // The card's reasons after the change, comma-separated; empty: unlisted.
        t.string('reasons_after', 64).notNullable();
        t.bigInteger('changed_at').notNullable();
      });
      await db.schema.createTable('deny_list_head', (t) => {
        t.integer('id').primary();
        t.bigInteger('version').notNullable();
      });
      await db('deny_list_head').insert({ id: 1, version: '0' });

      await db.schema.alterTable('taps', (t) => {
        t.string('line_id', 64).nullable();
        // Fare capping: the service day the tap counts against and what it costs
        // after the cap (the amount the debit asks for); NULL for REJECTED taps.
        t.string('service_day', 10).nullable();
        t.bigInteger('due_minor').nullable();
        // Debt recovery: retries so far, when the next one is due, when recovered.
        t.integer('debt_retries').notNullable().defaultTo(0);
        t.bigInteger('next_retry_at').nullable();
        t.bigInteger('recovered_at').nullable();
        // COUNTER_REPEATED or COUNTER_WENT_BACK when the tap is part of a suspected clone.
        t.string('clone_reason', 32).nullable();
        t.index(['card_id', 'service_day']);
        t.index(['card_id', 'proof_counter']);
        t.index(['card_id', 'tapped_at']);
        t.index(['state', 'next_retry_at']);
      });
      await db('taps').whereNot({ state: 'REJECTED' }).update({ due_minor: db.ref('fare_minor') });
      await db.schema.alterTable('cards', (t) => {
        // Latest tapped_at among the card's authenticated taps: with last_counter,
        // lets in-order taps skip the clone queries.
        t.bigInteger('last_tapped_at').nullable();
      });
      // Retries of declined debits (debts): each attempt is stored with its own
      // authorizer request id before it is sent (the outbox), so a crash
      // resends the same id and a tap is never debited twice.
      await db.schema.createTable('debit_attempts', (t) => {
        t.string('request_id', 64).primary();
        t.string('tap_id', 64).notNullable();
        t.integer('attempt').notNullable();
        t.string('state', 16).notNullable(); // PENDING, DEBITED, DECLINED, REJECTED
        t.string('reason', 64).nullable();
        t.string('deduction_id', 64).nullable();
        t.bigInteger('created_at').notNullable();
        t.bigInteger('answered_at').nullable();
        t.unique(['tap_id', 'attempt']);
        t.index(['state']);
      });
    },
  },
  {
    name: '007_ops_tap_traceparent',
    async up(db) {
      // The W3C traceparent the tap arrived with, passed on with its debit so
      // one tap can be followed by its own trace id (logs only; nullable).
      await db.schema.alterTable('taps', (t) => {
        t.string('traceparent', 64).nullable();
      });
    },
  },
  {
    name: '008_scale_outbox_leases',
    async up(db) {
      // Leases (common/leases.ts): several issuer replicas drain the debit
      // outbox (taps) and the debt retries (debit_attempts) of one database,
      // each row held by at most one replica at a time.
      await db.schema.alterTable('taps', (t) => addLeaseColumns(t));
      await db.schema.alterTable('debit_attempts', (t) => addLeaseColumns(t));
    },
  },
  {
    name: '009_enrollment_claims',
    async up(db) {
      // An enrollment claims its card before it asks the authorizer for an
      // agreement, so a concurrent enrollment of the same card is refused
      // before it creates one. The claim holds the exact AuthorizeEnrollment
      // request, so an abandoned enrollment's agreement can be found (the
      // request is idempotent at the authorizer) and revoked.
      await db.schema.createTable('enrollment_claims', (t) => {
        t.string('card_id', 64).primary();
        t.string('request_id', 64).notNullable();
        t.binary('authorize_request').notNullable();
        t.bigInteger('claimed_at').notNullable();
        t.bigInteger('expires_at').notNullable();
      });
      // Agreements an enrollment that never completed may have left at the
      // authorizer: revoked by the issuer's worker (the outbox). The row
      // stays once done, so the abandoned request id is never enrolled.
      await db.schema.createTable('abandoned_enrollments', (t) => {
        t.string('request_id', 64).primary();
        t.string('card_id', 64).notNullable();
        t.binary('authorize_request').notNullable();
        t.string('state', 16).notNullable(); // PENDING, REVOKED, NONE (no agreement was made)
        t.string('agreement_id', 64).nullable();
        t.bigInteger('abandoned_at').notNullable();
        t.bigInteger('done_at').nullable();
        t.index(['state']);
      });
    },
  },
  {
    name: '010_tap_clock_flag',
    up: async (db) => {
      // Set when the terminal's clock was implausible for the tap (tap-risk.ts clockFlag); indexed for the metric.
      await db.schema.alterTable('taps', (t) => {
        t.string('clock_flag', 16).nullable();
        t.index(['clock_flag']);
      });
    },
  },
  {
    name: '011_repeated_taps',
    async up(db) {
      await db.schema.alterTable('taps', (t) => {
        // What the terminal reported: the tap this one repeats (tap.repeat_of_tap_id).
        t.string('reported_repeat_of_tap_id', 80).nullable();
        // What the card's record of its last completed tap showed (tap.card_last_completed).
        t.string('card_last_completed_tap_id', 80).nullable();
        t.bigInteger('card_last_completed_counter').nullable();
        // The ride a REPEATED tap repeats: the terminal's link, or the tap the issuer paired it with.
        t.string('repeat_of_tap_id', 80).nullable();
        t.index(['repeat_of_tap_id']);
      });
    },
  },
  {
    name: '012_security_audit_trail',
    // The audit trail of ops calls (common/audit.ts).
    up: (db) => createAuditTable(db),
  },
];
