// The tap life cycle: one table of allowed moves, and one guarded move that
// writes the new state with its history row and leaves alone a tap that is
// no longer where the caller expected it.
import { expect } from 'chai';
import { TapState } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { enrollCard } from '../../issuer/enrollment.js';
import { ARRIVAL_STATES, DEBT_STATES, FINAL_STATES, IllegalTapMove, TAP_STATES, TRANSITIONS, canMove, moveTaps, type TapStateName } from '../../issuer/tap-states.js';
import { reportTaps } from '../../issuer/taps.js';
import { enrollRequest, newCard, openTestIssuer, tapsOf, type TestIssuer } from './fixtures.js';

const STATES = Object.keys(TRANSITIONS) as TapStateName[];

describe('issuer: tap life cycle', () => {
  it('names every TapState of the contract, and every state is reachable from an arrival', () => {
    const contract = Object.values(TapState).filter((v): v is number => typeof v === 'number' && v > 0);
    expect(Object.values(TAP_STATES).sort()).to.deep.equal(contract.sort());
    const reached = new Set<TapStateName>(ARRIVAL_STATES);
    for (let grew = true; grew; ) {
      grew = false;
      for (const from of [...reached]) for (const to of TRANSITIONS[from]) if (!reached.has(to)) grew = reached.add(to) !== undefined;
    }
    expect([...reached].sort()).to.deep.equal([...STATES].sort());
  });

  it('allows only the moves of a fare system: forward, and a debt recovered', () => {
    expect(canMove('RECEIVED', 'DEDUCTING')).to.equal(true);
    expect(canMove('DECLINED', 'DEDUCTED'), 'a recovered debt').to.equal(true);
    expect(canMove('DECLINED', 'UNCOLLECTABLE')).to.equal(true);
    for (const [from, to] of [
      ['SETTLED', 'DEDUCTED'],
      ['DEDUCTED', 'DECLINED'],
      ['RECEIVED', 'DEDUCTED'],
      ['CAPPED', 'DEDUCTING'],
      ['REJECTED', 'RECEIVED'],
    ] as const) {
      expect(canMove(from, to), `${from} -> ${to}`).to.equal(false);
    }
    expect([...FINAL_STATES].sort()).to.deep.equal(['CAPPED', 'REJECTED', 'REPEATED', 'SETTLED']);
    for (const s of DEBT_STATES) expect(FINAL_STATES).to.not.include(s);
  });

  describe('moveTaps', () => {
    let t: TestIssuer;
    const now = Date.parse('2030-03-10T02:00:00Z');
    const history = async (tapId: string) => (await t.db('tap_state_changes').where({ tap_id: tapId }).orderBy('id').select('state')).map((r) => r.state);
    const state = async (tapId: string) => (await t.db('taps').where({ tap_id: tapId }).first('state')).state;

    beforeEach(async () => {
      t = await openTestIssuer();
      const enrolled = enrollRequest(newCard(t.masterKey, 'C1'), 'req-1');
      const agreementId = (await enrollCard(t.ctx, enrolled.request)).enrollment!.agreementId;
      await reportTaps(t.ctx, { terminalId: 'T1', taps: tapsOf(enrolled.card, agreementId, 'T1', 1, 3).taps });
    });
    afterEach(() => t.close());

    it('moves the taps still in the expected state, with one history row each, and returns them', async () => {
      expect(await moveTaps(t.db, { from: 'RECEIVED', to: 'DEDUCTING', tapIds: ['T1:1', 'T1:2'], now })).to.have.members(['T1:1', 'T1:2']);
      // A second sender of the same move finds nothing left to move.
      expect(await moveTaps(t.db, { from: 'RECEIVED', to: 'DEDUCTING', tapIds: ['T1:1', 'T1:2', 'T1:3'], now })).to.deep.equal(['T1:3']);
      expect(await history('T1:1')).to.deep.equal(['RECEIVED', 'DEDUCTING']);
      expect(await history('T1:3')).to.deep.equal(['RECEIVED', 'DEDUCTING']);
    });

    it('sets columns for every tap and per tap', async () => {
      await moveTaps(t.db, { from: 'RECEIVED', to: 'DEDUCTING', tapIds: ['T1:1', 'T1:2'], now });
      const perTap = new Map([
        ['T1:1', { deduction_id: 'ded-1' }],
        ['T1:2', { deduction_id: 'ded-2' }],
      ]);
      await moveTaps(t.db, { from: 'DEDUCTING', to: 'DEDUCTED', tapIds: ['T1:1', 'T1:2'], now, set: { charged_currency: 'CNY' }, perTap });
      const rows = await t.db('taps').whereIn('tap_id', ['T1:1', 'T1:2']).orderBy('tap_id').select('tap_id', 'state', 'deduction_id', 'charged_currency');
      expect(rows).to.deep.equal([
        { tap_id: 'T1:1', state: 'DEDUCTED', deduction_id: 'ded-1', charged_currency: 'CNY' },
        { tap_id: 'T1:2', state: 'DEDUCTED', deduction_id: 'ded-2', charged_currency: 'CNY' },
      ]);
    });

    it('refuses a move the table does not allow, and changes nothing', async () => {
      let error: unknown;
      await moveTaps(t.db, { from: 'RECEIVED', to: 'SETTLED', tapIds: ['T1:1'], now }).catch((err) => (error = err));
      expect(error).to.be.instanceOf(IllegalTapMove);
      expect(await state('T1:1')).to.equal('RECEIVED');
      expect(await history('T1:1')).to.deep.equal(['RECEIVED']);
    });
  });
});
