// `npm run bench:back-office` on two batches: each server's in-process
// pipeline runs to the end (every tap settled, every debit booked) and
// reports a figure per phase.
import { expect } from 'chai';
import { backOfficeFigures } from '../../bench/back-office.js';

describe('bench:back-office (each server on its own, in process)', function () {
  this.timeout(120_000);

  it("carries two batches of 1000 taps through the issuer's and the authorizer's phases and times each", async () => {
    const f = await backOfficeFigures(2);
    expect(f.batches).to.equal(2);
    expect(Object.keys(f.issuer.msPer1000)).to.deep.equal(['ingest (TapReport)', 'debit outbox (Deduct answered at once)', 'settlement (Settle)']);
    expect(Object.keys(f.authorizer.msPer1000)).to.deep.equal(['debits (Deduct)', 'settlement (form, then acknowledge)']);
    for (const server of [f.issuer, f.authorizer]) {
      for (const ms of Object.values(server.msPer1000)) expect(ms).to.be.greaterThan(0);
      expect(server.tapsPerSecond).to.be.greaterThan(0);
    }
  });
});
