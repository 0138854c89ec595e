// PostgreSQL restarts under the replicas (issue 19): the test ends every
// connection of the issuer's and the authorizer's databases
// (pg_terminate_backend, as a restart or failover does to each client),
// again and again while riders tap. Calls that meet it fail UNAVAILABLE
// DATABASE_UNAVAILABLE or ABORTED, never INTERNAL; the pools reconnect
// without a restart; and every outbox item is done exactly once.
import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import knexFactory from 'knex';
import type { Db } from '../../common/db.js';
import { decodeErrorDetails } from '../../common/errors.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { POSTGRES_URL } from '../helpers/databases.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { CURRENCY, ISSUER_ID, newCard, startSystem, waitFor, type System } from '../helpers/system.js';
import { invariantViolations, isDrained, type AcceptedTap, type RunDatabases } from './checks.js';

const RIDERS = 6;
const ROUNDS = 8;

const databaseOf = (db: Db): string => {
  const connection = db.client.config.connection as string | { database?: string; connectionString?: string };
  if (typeof connection === 'string') return new URL(connection).pathname.slice(1);
  return connection.database ?? new URL(connection.connectionString!).pathname.slice(1);
};

/** A failed call must be one a client retries: UNAVAILABLE or ABORTED with a reason, never INTERNAL or UNKNOWN. */
function expectRetryable(err: unknown) {
  const e = err as ServiceError;
  expect([status.UNAVAILABLE, status.ABORTED], `${e.code} ${e.message}`).to.include(e.code);
  expect(decodeErrorDetails(e).errorInfo?.reason ?? 'transport', e.message).to.be.oneOf(['DATABASE_UNAVAILABLE', 'CONCURRENT_UPDATE', 'AUTHORIZER_UNAVAILABLE', 'transport']);
}

/** Sends the call until it passes; each failure must be retryable. */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      expectRetryable(err);
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

if (POSTGRES_URL)
  describe('PostgreSQL restarts under the replicas', function () {
    this.timeout(180_000);
    let sys: System;
    let logs: CapturedLogs;
    const admin = knexFactory({ client: 'pg', connection: POSTGRES_URL, pool: { min: 0, max: 1 } });
    let terminated = 0;

    /** Ends every connection to the issuer's and the authorizer's databases (this run's databases only). */
    async function restartDatabase() {
      const names = [databaseOf(sys.issuer.db), databaseOf(sys.authorizer.db)];
      const { rows } = await admin.raw('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = ANY(?) AND pid <> pg_backend_pid()', [names]);
      terminated += rows.length;
    }

    before(async () => {
      logs = captureLogs();
      sys = await startSystem({ backend: 'postgres', replicas: 2, log: logs.log, issuer: { deductBatchSize: 3, healthProbeIntervalMs: 100 }, authorizer: { settlementBatchSize: 3, healthProbeIntervalMs: 100 } });
    });
    after(async () => {
      await sys.close();
      await admin.destroy();
    });

    it('answers retryable statuses while connections die, reconnects, and does every outbox item once', async () => {
      const cards: CardImage[] = [];
      for (let n = 1; n <= RIDERS; n++) {
        const r = rider(n);
        await openAccount(sys, r, 200n * BigInt(ROUNDS));
        cards.push((await enroll(sys, newCard(sys, `C${n}`), r)).card);
      }
      const accepted: AcceptedTap[] = [];
      let refused = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const killing = restartDatabase();
        // Taps are decided at the terminal (its own database); the issuer's and authorizer's work goes on behind them.
        await Promise.all(
          cards.map(async (card, c) => {
            const res = await tap(sys, card);
            expect(res.decision).to.equal(Decision.DECISION_ACCEPT);
            cards[c] = res.card;
            accepted.push({ tapId: res.tap!.tapId, cardId: card.cardId, terminalId: 'T1' });
          }),
        );
        // Reads and writes at the issuer and the authorizer while connections die: passed, or refused retryably.
        await Promise.all([
          restartDatabase(),
          ...cards.map((card) =>
            retried(async () => {
              try {
                return await new Promise((resolve, reject) =>
                  sys.issuerClient.getCard({ cardId: card.cardId }, (err, res) => (err ? reject(err) : resolve(res))),
                );
              } catch (err) {
                refused++;
                throw err;
              }
            }),
          ),
        ]);
        await killing;
      }
      // A new rider after the last restart: the pools have reconnected.
      const late = rider(99);
      await retried(() => openAccount(sys, late));
      await retried(() => enroll(sys, newCard(sys, 'C99'), late));

      const dbs: RunDatabases = { issuer: sys.issuer.db, authorizer: sys.authorizer.db, terminals: new Map([['T1', sys.terminals[0].db]]) };
      await waitFor(() => isDrained(dbs).catch(() => false), 120_000);
      const { violations, figures } = await invariantViolations(dbs, accepted, sys.issuerClient, { issuerId: ISSUER_ID, currency: CURRENCY });
      expect(violations).to.deep.equal([]);
      expect(figures.issuerTaps).to.deep.equal({ SETTLED: RIDERS * ROUNDS });
      expect(figures.debitedCount).to.equal(RIDERS * ROUNDS);
      expect(terminated).to.be.greaterThan(0);
      // No call was answered INTERNAL or UNKNOWN.
      const failed = logs.lines().filter((l) => l.msg === 'rpc failed' || (l.msg === 'rpc' && (l.code === 'INTERNAL' || l.code === 'UNKNOWN')));
      expect(failed.map((l) => `${l.rpc} ${l.err?.message ?? l.code}`)).to.deep.equal([]);
      console.log(`      backends terminated: ${terminated}; calls refused retryably: ${refused}`);
    });
  });
