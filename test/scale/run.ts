// `npm run test:scale -- --taps 5000`: the scale-out scenario (scale.ts) on
// PostgreSQL with its figures printed at the end; exits 1 when an invariant
// was violated. PostgreSQL comes from TAPCREDIT_TEST_POSTGRES_URL, else the
// local default postgres://postgres@127.0.0.1:5432/test.
import { Command } from 'commander';

process.env.TAPCREDIT_TEST_POSTGRES_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
// Imported once the URL is set: the test databases helper reads it on import.
const { SCALE_DEFAULTS, runScaleScenario } = await import('./scale.js');

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
};

const o = new Command('test:scale')
  .description('Runs two issuer and two authorizer replicas on PostgreSQL as child processes, kills one of each while taps flow, then checks the invariants.')
  .option('--taps <n>', 'taps presented', int, SCALE_DEFAULTS.taps)
  .option('--riders <n>', 'riders (one card each)', int, SCALE_DEFAULTS.riders)
  .option('--terminals <n>', 'terminals', int, SCALE_DEFAULTS.terminals)
  .option('--lanes <n>', 'cards presented at once', int, SCALE_DEFAULTS.lanes)
  .option('--claim-ttl-ms <n>', 'lease time of outbox claims (takeover delay after a kill)', int, SCALE_DEFAULTS.claimTtlMs)
  .option('--log-level <level>', 'LOG_LEVEL of the servers', SCALE_DEFAULTS.logLevel)
  .option('--keep', 'keep the run directory (server logs, terminal databases)', false)
  .parse()
  .opts();

const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`);
const report = await runScaleScenario({
  ...SCALE_DEFAULTS,
  taps: o.taps,
  riders: o.riders,
  terminals: o.terminals,
  lanes: o.lanes,
  claimTtlMs: o.claimTtlMs,
  logLevel: o.logLevel,
  keepDir: o.keep,
  log,
});
console.log(JSON.stringify(report, null, 2));
console.log(
  `\n${report.accepted}/${report.taps} taps through 2 issuers and 2 authorizers on PostgreSQL, ${report.killed.join(' and ')} killed mid-run: ` +
    `${(report.durationMs / 1000).toFixed(1)} s end to end (${report.tapsPerSecond} taps/s), drained ${(report.drainMs / 1000).toFixed(1)} s after the last tap; ` +
    `${report.violations.length} violations`,
);
if (report.violations.length > 0) {
  console.log(`FAILED:\n  ${report.violations.join('\n  ')}${o.keep ? `\nRun directory kept: ${report.dir}` : ''}`);
  process.exit(1);
}
process.exit(0);
