// Schema of a terminal's own store: the taps it accepted (the outbox the
// forwarder drains), the deny list it holds, and one row of terminal state.
import type { Migration } from '../common/db.js';

export const terminalMigrations: Migration[] = [
  {
    name: '001_taps_and_deny_list',
    async up(db) {
      await db.schema.createTable('taps', (t) => {
        t.string('tap_id', 80).primary();
        // The terminal's sequence; unique so two taps can never share one.
        t.bigInteger('sequence').notNullable().unique();
        t.string('card_id', 64).notNullable();
        t.bigInteger('fare_minor_units').notNullable();
        t.string('fare_currency', 3).notNullable();
        t.bigInteger('tapped_at').notNullable();
        // The Tap exactly as it is sent to the issuer (protobuf bytes), so
        // what is forwarded is what was decided, byte for byte.
        t.binary('tap').notNullable();
        // When the issuer acknowledged the tap; null while it is unsent.
        t.bigInteger('acked_at').nullable();
        t.index(['acked_at', 'sequence'], 'taps_unsent_idx');
      });
      await db.schema.createTable('deny_list', (t) => {
        t.string('card_id', 64).primary();
        t.string('reason', 64).notNullable();
        // Deny-list version at which the card was listed.
        t.bigInteger('version').notNullable();
      });
      await db.schema.createTable('terminal_meta', (t) => {
        // A single row (id 1) of terminal-wide state.
        t.integer('id').primary();
        t.bigInteger('deny_list_version').notNullable().defaultTo(0);
        t.bigInteger('last_forwarded_at').nullable();
      });
      await db('terminal_meta').insert({ id: 1, deny_list_version: '0', last_forwarded_at: null });
    },
  },
  {
    name: '002_held_taps',
    async up(db) {
      await db.schema.alterTable('taps', (t) => {
        // Set when the issuer will not take the tap under its id (TAP_ID_CONFLICT):
        // it is kept for an operator and no longer sent, so it cannot block the taps behind it.
        t.string('held_reason', 64).nullable();
        t.bigInteger('held_at').nullable();
      });
    },
  },
  {
    name: '003_repeated_taps',
    async up(db) {
      await db.schema.alterTable('taps', (t) => {
        // The tap this one repeats (a card presented again after a torn tap); null for a charged ride.
        t.string('repeat_of_tap_id', 80).nullable();
        // The recent taps are read back by time when the terminal starts.
        t.index(['tapped_at'], 'taps_tapped_at_idx');
      });
    },
  },
];
