// `npm run bench -- --quick` once: the harness starts the servers as child
// processes, runs every phase and writes a complete report. Structure only:
// the figures of a few seconds on a shared machine prove nothing about speed.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { writeReport } from '../../bench/report.js';
import { BATCH_SIZES, runBench, type BenchReport, type EndToEnd } from '../../bench/run.js';
import { removeDir, tempDir } from '../helpers/assert.js';

describe('bench (npm run bench -- --quick)', function () {
  this.timeout(300_000);
  let report: BenchReport;
  let dir: string;

  before(async () => {
    dir = tempDir('tapcredit-bench-test-');
    report = await runBench({ quick: true, quiet: true });
  });
  after(() => removeDir(dir));

  const positive = (x: number, what: string) => expect(x, what).to.be.a('number').and.be.greaterThan(0);

  it('measures the terminal decision latency, isolated and under load, against its floor', () => {
    const { isolated, underLoad, floor } = report.presentCard;
    expect(isolated.count).to.be.greaterThan(0);
    for (const l of [isolated, underLoad]) {
      positive(l.p50Ms, 'p50');
      expect(l.p99Ms).to.be.at.least(l.p50Ms);
      expect(l.maxMs).to.be.at.least(l.p99Ms);
    }
    for (const v of Object.values(floor)) positive(v, 'floor');
  });

  it('measures TapReport ingest at batch sizes 1, 100 and 1000, and batch 1 from many gates, with both limits, every tap stored', () => {
    const cases = [...BATCH_SIZES.map((b) => [b, 2]), [1, 4]];
    expect(report.tapReport.map((t) => [t.batchSize, t.senders])).to.deep.equal(cases);
    for (const t of report.tapReport) {
      positive(t.tapsPerSecond, `batch ${t.batchSize}`);
      positive(t.transportTapsPerSecond, 'transport limit');
      positive(t.storageRowsPerSecond, 'storage limit');
      expect(t.ratioToTransport).to.be.closeTo(t.tapsPerSecond / t.transportTapsPerSecond, 0.01);
      expect(t.notStored).to.deep.equal({});
    }
    expect(report.baselines.transport.map((t) => [t.batchSize, t.senders])).to.deep.equal(cases);
    expect(report.baselines.storage.map((s) => s.batchSize)).to.deep.equal(cases.map(([b]) => b));
  });

  const settledEndToEnd = (e: EndToEnd) => {
    expect(e.accepted).to.be.greaterThan(0);
    expect(e.settled, 'every accepted tap settled').to.equal(e.accepted);
    expect(e.unsettled).to.equal(0);
    expect(e.lag.count).to.equal(e.settled);
    positive(e.lag.p50Ms, 'lag');
    positive(e.settledPerSecond, 'settled per second');
    expect(e.timeline.accepted.reduce((a, b) => a + b, 0)).to.equal(e.accepted);
    for (const name of ['issuer', 'authorizer']) expect(e.cpu[name]?.seconds, `${name} CPU`).to.be.a('number');
  };

  it('carries every tap of the city drive from ACCEPT to SETTLED and measures the lag', () => {
    expect(report.endToEnd.source).to.equal('virtual terminals');
    settledEndToEnd(report.endToEnd);
  });

  it('carries every tap presented at the terminal processes to SETTLED', () => {
    expect(report.gates.source).to.equal('terminal processes');
    settledEndToEnd(report.gates);
    expect(report.gates.presented).to.equal(report.gates.accepted);
  });

  it('reads the peak RSS of every server and states the targets and the machine', () => {
    expect(Object.keys(report.servers).sort()).to.deep.equal(['authorizer', 'issuer', 'terminal-T0001', 'terminal-T0002']);
    for (const s of Object.values(report.servers)) positive(s.peakRssMb, 'peak RSS');
    expect(report.targets.map((t) => t.name)).to.include.members(['PresentCard p99 (isolated gate)', 'TapReport ingest at batch 1000', 'End to end, sustained']);
    for (const t of report.targets) expect(t.met).to.be.a('boolean');
    positive(report.machine.nproc, 'nproc');
    expect(report.machine.loadAverageStart).to.have.length(3);
    expect(report.transport).to.equal('mtls');
    expect(Object.keys(report.durability)).to.include.members(['terminal', 'issuer', 'authorizer']);
  });

  it('writes the report as JSON and Markdown', () => {
    const files = writeReport(report, dir);
    expect(existsSync(files.json) && existsSync(files.markdown)).to.equal(true);
    expect(JSON.parse(readFileSync(files.json, 'utf8'))).to.deep.equal(JSON.parse(JSON.stringify(report)));
    const md = readFileSync(files.markdown, 'utf8');
    for (const heading of ['## Targets', '## Terminal decision latency', '## Issuer TapReport ingest', '## End to end, the city', '## End to end through terminal processes', '## Peak RSS', '## Baselines']) {
      expect(md).to.include(heading);
    }
    expect(files.json.startsWith(join(dir, ''))).to.equal(true);
  });
});
