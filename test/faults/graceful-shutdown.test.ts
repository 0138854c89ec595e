// Graceful shutdown: SIGTERM to each server (child processes) while cards
// are presented and the outboxes run. A stopping server lets the calls it
// took finish and its outbox worker finish its step, so:
// - every tap the terminal stored was answered to the rider (a call cut
//   after the commit would leave a stored tap nobody saw ACCEPT for, which
//   is exactly what a SIGKILL does);
// - the issuer leaves no tap DEDUCTING (the debit in flight got its answer
//   stored) and the authorizer's ledger balances;
// - after the restart nothing is lost: the invariants of docs/design.md hold.
import { expect } from 'chai';
import { ledgerViolations } from '../../authorizer/ledger.js';
import { toNumber } from '../../common/db.js';
import { openSqlite } from './invariants.js';
import { Prng, randomSeed } from './prng.js';
import { DriverRecord, FaultSystem, sleep } from './system.js';

describe('graceful shutdown (SIGTERM while taps flow)', function () {
  this.timeout(120_000);
  let system: FaultSystem;
  let passed = false;
  let driving = false;

  afterEach(async () => {
    driving = false;
    await system?.close(!passed);
  });

  it('finishes in-flight calls and outbox steps, and loses nothing across the restart', async () => {
    const seed = randomSeed();
    const prng = new Prng(seed);
    system = await FaultSystem.start(prng, { terminals: 1, meanFaultGapMs: 0, logLevel: 'warn' });
    // Many gates' worth of readers at once, so calls queue at the terminal and some are in flight at each signal.
    const LANES = 24;
    const cards = await system.enrollRiders(LANES * 2, prng.fork('setup'), { underfundedShare: 0.25, faresPerRider: 200 });
    const record = new DriverRecord();
    // Every PresentCard call with its start and end, to see what was in flight when the terminal got SIGTERM.
    const calls: { start: number; end?: number; answered?: boolean }[] = [];
    driving = true;
    const lanes = Array.from({ length: LANES }, async (_, lane) => {
      // Each lane has its own cards, so a card is in one hand at a time.
      const mine = cards.map((_, i) => i).filter((i) => i % LANES === lane);
      for (let n = 0; driving; n++) {
        const c = mine[n % mine.length];
        for (;;) {
          const call: (typeof calls)[number] = { start: Date.now() };
          calls.push(call);
          const failed = await system.presentOnce(cards, c, 0, record);
          call.end = Date.now();
          call.answered = failed === undefined;
          if (call.answered || record.errors.length > 0) break;
          await sleep(20); // the terminal is down: present the card again
        }
      }
    });
    const answered = () => calls.filter((c) => c.answered).length;
    const waitForTaps = async (more: number) => {
      const target = answered() + more;
      const deadline = Date.now() + 30_000;
      while (answered() < target) {
        if (Date.now() > deadline) throw new Error(`the terminal answered ${answered()} presentations, not ${target}; errors: ${record.errors.join('; ')}`);
        await sleep(10);
      }
    };

    // The terminal, mid-flow, three times (more, up to eight, until a call was caught in flight):
    // each call it had taken (sent at least 15 ms before the signal, so it reached the terminal)
    // must get its answer.
    const terminal = system.service('terminal-T1');
    const inFlight: (typeof calls)[number][] = [];
    for (let i = 0; i < 3 || (inFlight.length === 0 && i < 8); i++) {
      await waitForTaps(60);
      const signalledAt = Date.now();
      expect((await terminal.signal('SIGTERM')).code, 'terminal exit code').to.equal(0);
      await sleep(50); // let the last answers reach the driver
      inFlight.push(...calls.filter((c) => c.start <= signalledAt - 15 && (c.end === undefined || c.end >= signalledAt)));
      await terminal.start();
    }
    console.log(`      ${inFlight.length} calls in flight at the terminal's signals`);
    expect(inFlight.length, 'calls in flight at the signals').to.be.greaterThan(0);
    expect(inFlight.filter((c) => !c.answered).length, `of ${inFlight.length} calls in flight, unanswered`).to.equal(0);

    // The issuer, while terminals report and debits are sent.
    await waitForTaps(150);
    const issuer = system.service('issuer');
    expect((await issuer.signal('SIGTERM')).code, 'issuer exit code').to.equal(0);
    const issuerDb = openSqlite(system.files.issuer);
    const [{ n: deducting }] = await issuerDb('taps').where({ state: 'DEDUCTING' }).count({ n: '*' });
    await issuerDb.destroy();
    expect(toNumber(deducting), 'taps left DEDUCTING by the stopped issuer').to.equal(0);
    await issuer.start();

    // The authorizer, while it debits and settles.
    await waitForTaps(150);
    const authorizer = system.service('authorizer');
    expect((await authorizer.signal('SIGTERM')).code, 'authorizer exit code').to.equal(0);
    const authorizerDb = openSqlite(system.files.authorizer);
    expect(await ledgerViolations(authorizerDb), 'ledger of the stopped authorizer').to.deep.equal([]);
    await authorizerDb.destroy();
    await authorizer.start();

    await waitForTaps(100);
    driving = false;
    await Promise.all(lanes);

    const drain = await system.drain(60_000);
    expect(drain.drained, `drained: ${JSON.stringify(drain.pending)}`).to.equal(true);
    const api = await system.apiChecks();
    expect([...api.violations, ...(await system.stopAll())]).to.deep.equal([]);
    // Every tap the terminal stored was answered ACCEPT to the rider, and vice versa.
    const stored = (await system.databases().terminals.get('T1')!('taps').select('tap_id')).map((r) => r.tap_id).sort();
    expect(stored, `seed ${seed}`).to.deep.equal(record.accepted.map((a) => a.tapId).sort());
    const { violations, figures } = await system.check(record, api.reports);
    expect(violations, `seed ${seed}`).to.deep.equal([]);
    expect(figures.debitedCount).to.be.greaterThan(0);
    passed = true;
  });
});
