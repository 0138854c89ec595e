// Two issuer and two authorizer replicas in-process on PostgreSQL, with mTLS:
// every client lists both replicas of the service it calls (round robin),
// the replicas share their service's database, and one replica of each
// stops half way. Every tap is still debited and settled exactly once.
import { expect } from 'chai';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { POSTGRES_URL } from '../helpers/databases.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { CURRENCY, ISSUER_ID, newCard, startSystem, waitFor, type System } from '../helpers/system.js';
import { invariantViolations, isDrained, type AcceptedTap, type RunDatabases } from './checks.js';

const RIDERS = 12;
const TAPS_PER_RIDER = 10;

if (POSTGRES_URL)
  describe('replicas: two issuers and two authorizers on PostgreSQL, mTLS, round robin', function () {
    this.timeout(120_000);
    let sys: System;
    let logs: CapturedLogs;

    before(async () => {
      logs = captureLogs();
      // Small batches make many Deduct and Settle calls, so round robin has calls to spread however the taps bunch up.
      sys = await startSystem({
        backend: 'postgres',
        tls: true,
        replicas: 2,
        terminals: 2,
        log: logs.log,
        issuer: { deductBatchSize: 3 },
        authorizer: { settlementBatchSize: 3 },
      });
    });
    after(() => sys.close());

    /** Answered RPCs per replica, from the access log lines. */
    const served = (rpc: string) => {
      const byReplica: Record<string, number> = {};
      for (const l of logs.lines()) if (l.msg === 'rpc' && l.rpc === rpc && l.code === 'OK') byReplica[l.replica] = (byReplica[l.replica] ?? 0) + 1;
      return byReplica;
    };

    it('spreads the calls over both replicas, survives one replica of each stopping, and keeps every invariant', async () => {
      const cards: CardImage[] = [];
      for (let n = 1; n <= RIDERS; n++) {
        const r = rider(n);
        await openAccount(sys, r, 200n * BigInt(TAPS_PER_RIDER));
        cards.push((await enroll(sys, newCard(sys, `C${n}`), r)).card);
      }
      const accepted: AcceptedTap[] = [];
      const ride = async (round: number) =>
        Promise.all(
          cards.map(async (card, c) => {
            const terminal = (c + round) % 2;
            const res = await tap(sys, card, terminal);
            expect(res.decision, `card ${card.cardId} round ${round}`).to.equal(Decision.DECISION_ACCEPT);
            cards[c] = res.card!;
            accepted.push({ tapId: res.tap!.tapId, cardId: card.cardId, terminalId: `T${terminal + 1}` });
          }),
        );
      for (let round = 0; round < TAPS_PER_RIDER / 2; round++) await ride(round);
      // Both replicas of each took calls while both were up.
      await waitFor(() => Object.keys(served('Deduct')).length === 2 && Object.keys(served('Settle')).length === 2, 60_000);
      expect(Object.keys(served('TapReport'))).to.have.members(['1', '2']);

      // Replica 2 of each service stops; the clients go on with replica 1.
      await Promise.all([sys.issuers[1].close(), sys.authorizers[1].close()]);
      for (let round = TAPS_PER_RIDER / 2; round < TAPS_PER_RIDER; round++) await ride(round);

      const dbs: RunDatabases = {
        issuer: sys.issuer.db,
        authorizer: sys.authorizer.db,
        terminals: new Map(sys.terminals.map((t, i) => [`T${i + 1}`, t.db])),
      };
      await waitFor(() => isDrained(dbs), 60_000);
      const { violations, figures } = await invariantViolations(dbs, accepted, sys.issuerClient, { issuerId: ISSUER_ID, currency: CURRENCY });
      expect(violations).to.deep.equal([]);
      expect(figures.issuerTaps).to.deep.equal({ SETTLED: RIDERS * TAPS_PER_RIDER });
      expect(figures.debitedCount).to.equal(RIDERS * TAPS_PER_RIDER);
    });
  });
