// `npm run test:faults -- --seed N --taps N`: one fault-injection run with
// the figures printed at the end; exits 1 when an invariant was violated.
// The seed is printed first, so any failure replays with --seed.
import { Command } from 'commander';
import { DEFAULT_OPTIONS, runFaultScenario } from './harness.js';
import { randomSeed } from './prng.js';

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
};

const cli = new Command('test:faults')
  .description('Runs the three servers as child processes, kills and restarts them and breaks the network between them while cards are presented, then checks the invariants.')
  .option('--seed <n>', 'seed of every random choice (default: a new random one)', int)
  .option('--taps <n>', 'cards presented in all', int, DEFAULT_OPTIONS.taps)
  .option('--cards <n>', 'cards (each with its rider account)', int, DEFAULT_OPTIONS.cards)
  .option('--terminals <n>', 'terminals', int, DEFAULT_OPTIONS.terminals)
  .option('--kills <n>', 'server restarts while taps flow (every server at least once when >= 2 + terminals)', int)
  .option('--lanes <n>', 'cards presented at once', int, DEFAULT_OPTIONS.lanes)
  .option('--fault-gap-ms <n>', 'mean gap between network faults on each hop; 0 turns them off', int, DEFAULT_OPTIONS.meanFaultGapMs)
  .option('--drain-timeout-ms <n>', 'how long the system may take to drain after the faults stop', int, DEFAULT_OPTIONS.quiescenceTimeoutMs)
  .option('--keep', 'keep the run directory (databases, server logs) even when the run passes', false)
  .option('--log-level <level>', 'LOG_LEVEL of the servers', DEFAULT_OPTIONS.logLevel)
  .parse();

const o = cli.opts();
const seed: number = o.seed ?? randomSeed();
// By default one restart per ~1000 taps, and at least one of every server.
const kills: number = o.kills ?? Math.max(2 + o.terminals, Math.round(o.taps / 1000));
const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`);

const report = await runFaultScenario({
  seed,
  taps: o.taps,
  cards: o.cards,
  terminals: o.terminals,
  kills,
  lanes: o.lanes,
  meanFaultGapMs: o.faultGapMs,
  quiescenceTimeoutMs: o.drainTimeoutMs,
  keepDir: o.keep,
  logLevel: o.logLevel,
  log,
}).catch((err) => {
  console.log(`FAILED with an error (seed ${seed}); the run directory is kept, see the line "servers up ... run directory" above.`);
  throw err;
});
const kill = Object.values(report.restarts).reduce((n, r) => n + r.kills, 0);
const term = Object.values(report.restarts).reduce((n, r) => n + r.terms, 0);
const faults = Object.values(report.networkFaults).reduce((n, c) => n + c.cuts + c.delays + c.drops + c.refusals, 0);
console.log(JSON.stringify(report, null, 2));
console.log(
  `\nseed ${report.seed}: ${report.presented} taps presented, ${report.accepted} accepted, ${report.debitedCount} debited; ` +
    `${kill} SIGKILL + ${term} SIGTERM restarts, ${faults} network faults; ${report.violations.length} violations; ${(report.durationMs / 1000).toFixed(1)} s`,
);
console.log(
  `charged rides == ACCEPTs seen for ${report.cardsMatching} of ${report.cards} cards: ${report.ridesCharged} rides charged, ` +
    `${report.acceptsSeen} ACCEPTs seen (${report.repeatsAccepted} of them repeats of a torn tap, no fare)`,
);
if (report.violations.length > 0) {
  console.log(`FAILED. Replay: ${report.replay}\nRun directory kept: ${report.dir}`);
  process.exit(1);
}
process.exit(0);
