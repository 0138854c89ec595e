// `npm run bench:fanout` on a few streams over mTLS: the harness starts the
// issuer and the bare baseline as child processes, every stream syncs and
// sees every listing on both, and each figure is reported. Structure only:
// the figures of a few seconds on a shared machine prove nothing about speed.
import { expect } from 'chai';
import { fanoutBench, renderFanout, type FanoutFigures } from '../../bench/fanout.js';

describe('bench:fanout (npm run bench:fanout -- --streams 150 --changes 3)', function () {
  this.timeout(300_000);
  let results: FanoutFigures[];

  before(async () => {
    results = await fanoutBench({ streams: 150, changes: 3, tls: true, log: () => {} });
  });

  it('measures the issuer and the bare grpc-js server on the same streams, over two connections, every listing seen by every stream', () => {
    expect(results.map((r) => [r.server, r.streams, r.connections, r.missed])).to.deep.equal([
      ['issuer', 150, 2, 0],
      ['bare grpc-js', 150, 2, 0],
    ]);
    for (const r of results) {
      for (const key of ['syncAllMs', 'seenP50Ms', 'rssBeforeMb', 'rssWithStreamsMb', 'peakRssMb'] as const) expect(r[key], key).to.be.greaterThan(0);
      expect(r.seenP99Ms).to.be.at.least(r.seenP50Ms);
      expect(r.allSeenMaxMs).to.be.at.least(r.allSeenP50Ms);
      expect(r.cpuMsPerChange).to.be.at.least(0);
    }
    expect(renderFanout(results)).to.match(/^\| issuer \| 150 \(2\) \|/m);
  });
});
