// A crash between "sent" and "answer stored", on each hop: the proxy lets
// the request through and drops the answer, the sender is killed (SIGKILL),
// and after its restart it asks again with the same idempotency key (the
// tap, the tap id as debit request id, the settlement id). The receiver
// answers with what it stored the first time: nothing is stored or debited
// twice. The servers are child processes (their main.ts).
import { expect } from 'chai';
import { toNumber } from '../../common/db.js';
import { callUnary } from '../../common/rpc.js';
import { Prng, randomSeed } from './prng.js';
import { DriverRecord, FaultSystem, sleep } from './system.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';

async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

describe('a crash between sending and storing the answer (SIGKILL, child processes)', function () {
  this.timeout(90_000);
  const seed = randomSeed();
  let system: FaultSystem;
  let cards: CardImage[];
  const record = new DriverRecord();
  let passed = false;
  const count = async (q: Promise<{ n: unknown }[]>) => toNumber((await q)[0].n);

  before(async () => {
    const prng = new Prng(seed);
    system = await FaultSystem.start(prng, { terminals: 1, meanFaultGapMs: 0, logLevel: 'warn' });
    cards = await system.enrollRiders(3, prng.fork('setup'), { underfundedShare: 0, faresPerRider: 10 });
    // The terminal's connection to the issuer must be up before answers are dropped: a connection
    // opened while they are dropped never completes its HTTP/2 handshake, so nothing would be sent.
    // The deny-list stream being in sync shows it is.
    const terminal = system.clients.terminals[0];
    await until('the terminal is connected to the issuer', async () => (await callUnary(terminal, terminal.getTerminalStatus, { unsentTapsLimit: 0 })).denyListSyncedAt);
  });
  afterEach(() => {
    // A failed test must not leave a hop dropping answers for the next one.
    for (const proxy of Object.values(system.proxies)) proxy.dropAnswers = false;
  });
  after(async () => {
    await system?.close(!passed);
  });

  /** Presents card c; resolves the accepted tap's id. */
  async function tap(c: number): Promise<string> {
    await system.present(cards, c, 0, record);
    const accepted = record.accepted.at(-1);
    expect(accepted?.cardId, record.errors.join('; ')).to.equal(cards[c].cardId);
    return accepted!.tapId;
  }

  it('terminal -> issuer: the restarted terminal resends the tap, the issuer acknowledges it as a duplicate', async () => {
    const { issuer, terminals } = system.databases();
    const terminal = terminals.get('T1')!;
    system.proxies['terminal->issuer'].dropAnswers = true;
    const tapId = await tap(0);
    await until('the issuer stored the tap', async () => (await issuer('taps').where({ tap_id: tapId }).first('state')) !== undefined);
    expect((await terminal('taps').where({ tap_id: tapId }).first('acked_at')).acked_at, 'acknowledged at the terminal').to.equal(null);

    await system.service('terminal-T1').signal('SIGKILL');
    system.proxies['terminal->issuer'].dropAnswers = false;
    await system.service('terminal-T1').start();
    await until('the terminal has the acknowledgement', async () => (await terminal('taps').where({ tap_id: tapId }).first('acked_at'))?.acked_at !== null);
    expect(await count(issuer('tap_state_changes').where({ tap_id: tapId, state: 'RECEIVED' }).count({ n: '*' })), 'times stored').to.equal(1);
  });

  it('issuer -> authorizer: the restarted issuer asks again with the same request id and gets the first debit', async () => {
    const { issuer, authorizer } = system.databases();
    system.proxies['issuer->authorizer'].dropAnswers = true;
    const tapId = await tap(1);
    const debit: { deduction_id: string; status: string } = await until('the authorizer debited the tap', () => authorizer('deductions').where({ request_id: tapId }).first('deduction_id', 'status'));
    expect(debit.status).to.equal('DEBITED');
    expect((await issuer('taps').where({ tap_id: tapId }).first('state')).state, 'state at the issuer').to.equal('DEDUCTING');
    // Meanwhile the authorizer settles the debit: the issuer must ask it to come back later, not call it a mismatch.
    await until('the issuer deferred the settlement of the tap', async () => {
      const s = await authorizer('deductions as d').join('settlements as s', 's.settlement_id', 'd.settlement_id').where('d.request_id', tapId).first('s.last_error');
      return /DEBIT_OUTCOME_PENDING|await their debit answer/.test(s?.last_error ?? '');
    });

    await system.service('issuer').signal('SIGKILL');
    system.proxies['issuer->authorizer'].dropAnswers = false;
    await system.service('issuer').start();
    const settled = await until('the tap is settled', async () => {
      const t = await issuer('taps').where({ tap_id: tapId }).first('state', 'deduction_id');
      return t?.state === 'SETTLED' ? t : undefined;
    });
    expect(settled.deduction_id, 'deduction id at the issuer').to.equal(debit.deduction_id);
    await until('the authorizer has its settlements acknowledged', async () => (await count(authorizer('settlements').where({ state: 'PENDING' }).count({ n: '*' }))) === 0);
    expect(await count(authorizer('deductions').where({ request_id: tapId }).count({ n: '*' })), 'deductions').to.equal(1);
    expect(await count(authorizer('transfers').where({ kind: 'FARE', reference: tapId }).count({ n: '*' })), 'fare transfers').to.equal(1);
  });

  it('authorizer -> issuer: the restarted authorizer resends the same settlement and books it once', async () => {
    const { issuer, authorizer } = system.databases();
    system.proxies['authorizer->issuer'].dropAnswers = true;
    const tapId = await tap(2);
    const { settlement_id: settlementId } = await until('the issuer settled the tap', async () => {
      const t = await issuer('taps').where({ tap_id: tapId }).first('state', 'settlement_id');
      return t?.state === 'SETTLED' ? t : undefined;
    });
    expect((await authorizer('settlements').where({ settlement_id: settlementId }).first('state')).state, 'at the authorizer').to.equal('PENDING');

    await system.service('authorizer').signal('SIGKILL');
    system.proxies['authorizer->issuer'].dropAnswers = false;
    await system.service('authorizer').start();
    await until('the authorizer has the acknowledgement', async () => (await authorizer('settlements').where({ settlement_id: settlementId }).first('state'))?.state === 'ACKNOWLEDGED');
    expect(await count(issuer('settlements').where({ settlement_id: settlementId }).count({ n: '*' })), 'settlements at the issuer').to.equal(1);
    expect(await count(authorizer('transfers').where({ kind: 'SETTLEMENT', reference: settlementId }).count({ n: '*' })), 'settlement transfers').to.equal(1);
  });

  it('ends with every invariant holding', async () => {
    system.setFaults(false);
    const drain = await system.drain(60_000);
    expect(drain.drained, JSON.stringify(drain.pending)).to.equal(true);
    const api = await system.apiChecks();
    const stopped = await system.stopAll();
    const { violations } = await system.check(record, api.reports);
    expect([...api.violations, ...stopped, ...violations], `seed ${seed}`).to.deep.equal([]);
    passed = true;
  });
});
