// `npm run bench -- [--duration 60] [--cards 5000] [--terminals 4] [--readers 8] [--quick] ...`
// Runs the benchmark (bench/run.ts), prints the Markdown report and writes it
// with the JSON to bench/reports/<timestamp>.{json,md}.
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { SERVER_HEAP_MB } from '../common/config.js';
import { ROOT, type HopSettings } from './cluster.js';
import { renderMarkdown, writeReport } from './report.js';
import { runBench, type BenchOptions } from './run.js';

/** The flags, as Commander gives them; the hop flags are named as the servers' settings. */
type CliOptions = HopSettings & {
  duration?: number;
  virtualTerminals?: number;
  maxInFlight?: number;
  heapMb?: number;
  gatesDuration?: number;
  cards?: number;
  terminals?: number;
  readers?: number;
  rate?: number;
  latencySeconds?: number;
  latencyRate?: number;
  senders?: number;
  gateSenders?: number;
  insecure?: boolean;
  postgres?: string | true;
  logLevel: string;
  profile?: boolean;
  keep?: boolean;
  quick?: boolean;
  out: string;
};

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};

const opts = new Command()
  .name('bench')
  .description('start the servers, enroll cards, drive taps and report latency, throughput and memory against the transport and storage limits')
  .option('--duration <s>', 'seconds of the city end-to-end drive through virtual terminals (>= 60 for the sustained figure)', int)
  .option('--cards <n>', 'enrolled cards (one rider and account each)', int)
  .option('--virtual-terminals <v>', 'virtual terminals of the city drive (the generator plays their forwarders)', int)
  .option('--rate <taps/s>', 'pace the city drive at this many taps/s (default: as fast as the back office settles them)', int)
  .option('--max-in-flight <n>', 'without --rate: most city taps accepted but not yet settled (bounds the lag)', int)
  .option('--terminals <m>', 'terminal processes (each a real TerminalService with its own store and forwarder)', int)
  .option('--readers <r>', 'concurrent card readers per terminal process in the gates drive', int)
  .option('--gates-duration <s>', 'seconds of the gates drive: cards presented at the terminal processes, end to end', int)
  .option('--latency-seconds <s>', 'seconds of the isolated decision-latency phase', int)
  .option('--latency-rate <taps/s>', 'taps/s of the isolated decision-latency phase over all terminals', int)
  .option('--senders <n>', 'virtual terminals sending TapReport batches at once', int)
  .option('--gate-senders <n>', 'gates each reporting single taps at once in the batch-1 ingest from a city', int)
  .option('--forward-batch-size <n>', 'terminal -> issuer TapReport batch size', int)
  .option('--forward-window-ms <ms>', 'terminal forwarder: wait this long for a batch to fill', int)
  .option('--deduct-batch-size <n>', 'issuer -> authorizer Deduct batch size', int)
  .option('--deduct-window-ms <ms>', 'issuer debit worker: wait this long for a batch to fill', int)
  .option('--settlement-batch-size <n>', 'authorizer -> issuer Settle batch size', int)
  .option('--settlement-window-ms <ms>', 'authorizer settlement worker: wait this long for a batch to fill', int)
  .option('--insecure', 'plaintext on loopback instead of mTLS')
  .option(
    '--postgres [url]',
    'the issuer and the authorizer on PostgreSQL: fresh databases on this server, dropped afterwards (default TAPCREDIT_TEST_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/test)',
  )
  .option('--heap-mb <n>', `cap each server's V8 old space at this many MB (node --max-old-space-size; default ${SERVER_HEAP_MB}, as npm start; 0: Node's own)`, int)
  .option('--log-level <level>', 'LOG_LEVEL of the servers (their logs go to the data directory)', 'info')
  .option('--profile', 'write CPU profiles of each server next to the report: <server>.1 covers the city drive and its drain')
  .option('--keep', 'keep the data directory (SQLite files, logs)')
  .option('--quick', 'a few seconds with a handful of cards: proves the harness works, figures mean nothing')
  .option('--out <dir>', 'where reports go', join(ROOT, 'bench', 'reports'))
  .parse()
  .opts<CliOptions>();

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const options: Partial<BenchOptions> = Object.fromEntries(
  Object.entries({
    durationSeconds: opts.duration,
    virtualTerminals: opts.virtualTerminals,
    maxInFlight: opts.maxInFlight,
    heapMb: opts.heapMb,
    gatesSeconds: opts.gatesDuration,
    cards: opts.cards,
    terminals: opts.terminals,
    readersPerTerminal: opts.readers,
    rate: opts.rate,
    latencySeconds: opts.latencySeconds,
    latencyRate: opts.latencyRate,
    senders: opts.senders,
    gateSenders: opts.gateSenders,
    gateTaps: opts.gateSenders === undefined ? undefined : opts.gateSenders * 100,
    tls: !opts.insecure,
    postgres: opts.postgres === true ? (process.env.TAPCREDIT_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test') : opts.postgres,
    logLevel: opts.logLevel,
    hops: Object.fromEntries(
      Object.entries({
        forwardBatchSize: opts.forwardBatchSize,
        forwardWindowMs: opts.forwardWindowMs,
        deductBatchSize: opts.deductBatchSize,
        deductWindowMs: opts.deductWindowMs,
        settlementBatchSize: opts.settlementBatchSize,
        settlementWindowMs: opts.settlementWindowMs,
      }).filter(([, v]) => v !== undefined),
    ),
    profileDir: opts.profile ? join(opts.out, `${stamp}-profiles`) : undefined,
    keep: opts.keep ?? false,
    quick: opts.quick ?? false,
  }).filter(([, v]) => v !== undefined),
);

const report = await runBench(options);
const files = writeReport(report, opts.out);
console.log(renderMarkdown(report));
console.log(`report: ${files.markdown}\n        ${files.json}${options.profileDir ? `\nprofiles: ${options.profileDir}` : ''}`);
