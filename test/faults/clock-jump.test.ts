// A terminal clock that jumps (issue 19): back an hour, forward a day, as an
// NTP step or a dead RTC battery makes it. The terminal's tap ids do not
// depend on its clock; the issuer keeps every tap, flags the implausible
// times (IssuerTap.clock_flag and a metric), prices them on the day they were
// received, and suspects no clone for a genuine card.
import { expect } from 'chai';
import { callUnary } from '../../common/rpc.js';
import { Decision } from '../../gen/tapcredit/terminal/v1/terminal.js';
import { waitFor } from '../helpers/assert.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

const HOUR = 3_600_000;

async function metricSample(address: string | undefined, sample: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

describe('a terminal clock that jumps (issue 19)', function () {
  this.timeout(60_000);
  let sys: System;
  let offsetMs = 0;

  before(async () => {
    sys = await startSystem({ metrics: true, terminal: () => ({ now: () => new Date(Date.now() + offsetMs) }) });
  });
  after(() => sys.close());

  it('keeps tap ids consecutive; the issuer keeps, flags and prices each tap, and lists no clone', async () => {
    const r = rider(1);
    await openAccount(sys, r);
    let card = (await enroll(sys, newCard(sys, 'card-clock-1'), r)).card;
    const tapIds: string[] = [];
    for (const offset of [0, -HOUR, 24 * HOUR, 0]) {
      offsetMs = offset;
      const result = await tap(sys, card);
      expect(result.decision).to.equal(Decision.DECISION_ACCEPT);
      tapIds.push(result.tap!.tapId);
      card = result.card;
      // Each tap reaches the issuer before the next, so the order of arrival is the order of the taps.
      await waitFor(async () => (await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: card.cardId, pageSize: 10, pageToken: '' })).taps.length === tapIds.length);
    }
    offsetMs = 0;
    expect(tapIds).to.deep.equal(['T1:1', 'T1:2', 'T1:3', 'T1:4']);

    const { taps } = await callUnary(sys.issuerClient, sys.issuerClient.listCardTaps, { cardId: card.cardId, pageSize: 10, pageToken: '' });
    const oldestFirst = [...taps].reverse();
    expect(oldestFirst.map((t) => [t.tap!.tapId, t.clockFlag, t.cloneSuspected, t.amountDue?.minorUnits])).to.deep.equal([
      ['T1:1', '', false, '200'],
      ['T1:2', 'CLOCK_BEHIND', false, '200'],
      ['T1:3', 'CLOCK_AHEAD', false, '200'],
      ['T1:4', '', false, '200'],
    ]);
    // Every tap counts on the day the issuer received it (one day here), the jumped ones included.
    expect(new Set(oldestFirst.map((t) => t.serviceDay)).size).to.equal(1);
    const { card: held } = await callUnary(sys.issuerClient, sys.issuerClient.getCard, { cardId: card.cardId });
    expect(held!.denyListReasons).to.deep.equal([]);
    for (const flag of ['CLOCK_BEHIND', 'CLOCK_AHEAD']) {
      expect(await metricSample(sys.issuer.metricsAddress, `tapcredit_issuer_taps_with_implausible_time{flag="${flag}"}`)).to.equal(1);
    }
  });
});
