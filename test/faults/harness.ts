// The fault-injection run: the three servers as child processes (three or
// more terminals), a fault proxy on each hop between them, a driver that
// presents cards at the terminals, and a seeded schedule that kills and
// restarts every server while taps flow. Then faults stop, the system is
// left to drain, and the invariants are checked (invariants.ts).
//
// Everything random is drawn from the seed: accounts and their funding, the
// order in which cards are presented at which terminal, the kill schedule
// and each proxy's faults. The operating system's timing is not, so a seed
// replays the same scenario, not the same interleaving to the microsecond.
import { Prng } from './prng.js';
import type { ProxyFaultCounts } from './proxy.js';
import { DriverRecord, FaultSystem, sleep } from './system.js';

export interface FaultRunOptions {
  seed: number;
  /** Cards presented in all (accepted or declined). */
  taps: number;
  cards: number;
  terminals: number;
  /** Server restarts while taps flow; every server is restarted at least once when kills >= 2 + terminals. */
  kills: number;
  /** Share of restarts that are graceful (SIGTERM) instead of SIGKILL. */
  gracefulShare: number;
  /** Share of accounts funded for a few fares only, so their later debits decline. */
  underfundedShare: number;
  /** Cards presented at once. */
  lanes: number;
  /** Mean gap between two network faults on each hop (ms); 0 turns the proxies' faults off. */
  meanFaultGapMs: number;
  /** Faults stay on at least this long from the drive's start, so every hop sees some however fast the taps go. */
  minFaultWindowMs: number;
  /** How long the system may take to drain once faults stop. */
  quiescenceTimeoutMs: number;
  /** Keeps the run's directory (databases and server logs) even when it passes. */
  keepDir: boolean;
  /** LOG_LEVEL of the servers. */
  logLevel: string;
  /** Progress lines go here. */
  log: (line: string) => void;
}

export const DEFAULT_OPTIONS: Omit<FaultRunOptions, 'seed'> = {
  taps: 2000,
  cards: 50,
  terminals: 3,
  kills: 6,
  gracefulShare: 0.25,
  underfundedShare: 0.2,
  lanes: 12,
  meanFaultGapMs: 1000,
  minFaultWindowMs: 10_000,
  quiescenceTimeoutMs: 120_000,
  keepDir: false,
  logLevel: 'info',
  log: () => {},
};

export interface FaultRunReport {
  seed: number;
  /** The command that replays this run. */
  replay: string;
  dir: string;
  durationMs: number;
  presented: number;
  accepted: number;
  declined: Record<string, number>;
  /** Presentations the driver had to repeat because the terminal did not answer. */
  retriedPresentations: number;
  /** Restarts by server: kills (SIGKILL) and graceful stops (SIGTERM). */
  restarts: Record<string, { kills: number; terms: number }>;
  /** Faults the proxies injected, by hop. */
  networkFaults: Record<string, ProxyFaultCounts>;
  drainMs: number;
  issuerTaps: Record<string, number>;
  rejected: Record<string, number>;
  debitedCount: number;
  debited: string;
  settled: string;
  /** Invariant 6 (as the rider sees it): rides charged and ACCEPTs seen over all cards, repeats among the ACCEPTs, and cards where the two agree. */
  ridesCharged: number;
  acceptsSeen: number;
  repeatsAccepted: number;
  cards: number;
  cardsMatching: number;
  violations: string[];
}

export interface KillEvent {
  atTap: number;
  service: string;
  signal: 'SIGKILL' | 'SIGTERM';
  downMs: number;
}

/** The restarts of a run: each server at least once (when there are enough), at seeded points while taps flow. */
export function killSchedule(prng: Prng, opts: Pick<FaultRunOptions, 'taps' | 'kills' | 'gracefulShare'>, services: string[]): KillEvent[] {
  const order = [...services];
  for (let i = order.length - 1; i > 0; i--) {
    const j = prng.int(0, i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const events: KillEvent[] = [];
  for (let k = 0; k < opts.kills; k++) {
    events.push({
      atTap: prng.int(Math.floor(opts.taps * 0.05), Math.floor(opts.taps * 0.9)),
      service: k < order.length ? order[k] : prng.pick(services),
      signal: prng.chance(opts.gracefulShare) ? 'SIGTERM' : 'SIGKILL',
      downMs: prng.int(100, 1500),
    });
  }
  return events.sort((a, b) => a.atTap - b.atTap);
}

export async function runFaultScenario(options: Partial<FaultRunOptions> & { seed: number }): Promise<FaultRunReport> {
  const opts: FaultRunOptions = { ...DEFAULT_OPTIONS, ...options };
  const say = opts.log;
  const started = Date.now();
  const root = new Prng(opts.seed);
  const violations: string[] = [];
  const replay =
    `npm run test:faults -- --seed ${opts.seed} --taps ${opts.taps} --cards ${opts.cards} --terminals ${opts.terminals} --kills ${opts.kills}` +
    ` --lanes ${opts.lanes} --fault-gap-ms ${opts.meanFaultGapMs}`;
  say(`fault run: seed ${opts.seed}, ${opts.taps} taps over ${opts.cards} cards at ${opts.terminals} terminals, ${opts.kills} restarts`);
  say(`replay: ${replay}`);

  const system = await FaultSystem.start(root, { terminals: opts.terminals, meanFaultGapMs: opts.meanFaultGapMs, logLevel: opts.logLevel });
  let passed = false;
  try {
    say(`servers up in ${Date.now() - started} ms; run directory ${system.dir}`);
    const cards = await system.enrollRiders(opts.cards, root.fork('setup'), {
      underfundedShare: opts.underfundedShare,
      faresPerRider: Math.ceil(opts.taps / opts.cards) * 3 + 20,
    });
    say(`${opts.cards} cards enrolled`);

    // --- faults on; the driver and the kill schedule run together ---
    system.setFaults(opts.meanFaultGapMs > 0);
    const driverPrng = root.fork('driver');
    const plan = Array.from({ length: opts.taps }, () => ({ card: driverPrng.int(0, opts.cards - 1), terminal: driverPrng.int(0, opts.terminals - 1) }));
    const record = new DriverRecord();
    let done = 0;
    let driving = true;
    // One presentation of a card at a time: a card is in one rider's hand.
    const chains = cards.map(() => Promise.resolve());
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < opts.taps; i = next++) {
        const { card, terminal } = plan[i];
        const run = chains[card].then(() => system.present(cards, card, terminal, record));
        chains[card] = run;
        await run;
        done++;
      }
    };

    // Each server goes through its own restarts in order; different servers may be down at the same time.
    const schedule = killSchedule(root.fork('kills'), opts, [...system.services.keys()]);
    const chaos = Promise.all(
      [...system.services.keys()].map(async (name) => {
        const service = system.service(name);
        for (const event of schedule.filter((e) => e.service === name)) {
          while (driving && done < event.atTap) await sleep(10);
          const exit = await service.signal(event.signal);
          say(`${event.signal} ${name} at tap ${done} (${exit.signal ?? `exit ${exit.code}`}); down ${event.downMs} ms`);
          if (event.signal === 'SIGTERM' && exit.code !== 0) violations.push(`${name} exited ${exit.code ?? exit.signal} on SIGTERM`);
          await sleep(event.downMs);
          try {
            await service.start();
          } catch (err) {
            violations.push(`${name} did not start again: ${err instanceof Error ? err.message : String(err)}`);
            return;
          }
        }
      }),
    );

    const driveStarted = Date.now();
    await Promise.all(Array.from({ length: opts.lanes }, lane));
    driving = false;
    await chaos;
    say(`${opts.taps} presented in ${Date.now() - driveStarted} ms: ${record.accepted.length} accepted, ${record.retried} presentations retried`);
    // The outboxes still carry debits and settlements meanwhile.
    const rest = opts.minFaultWindowMs - (Date.now() - driveStarted);
    if (opts.meanFaultGapMs > 0 && rest > 0) await sleep(rest);

    // --- faults off; drain; check over the APIs, stop, check the databases ---
    system.setFaults(false);
    const drain = await system.drain(opts.quiescenceTimeoutMs);
    if (!drain.drained) violations.push(`not drained within ${opts.quiescenceTimeoutMs} ms: ${JSON.stringify(drain.pending)}`);
    say(`drained in ${drain.ms} ms`);
    const api = await system.apiChecks();
    violations.push(...api.violations);
    violations.push(...(await system.denyListProbe(cards)));
    violations.push(...(await system.stopAll()));
    const checked = await system.check(record, api.reports);
    violations.push(...checked.violations);

    const restarts: FaultRunReport['restarts'] = {};
    for (const s of system.services.values()) restarts[s.spec.name] = { kills: s.kills, terms: s.terms - 1 }; // the final stop is not a fault
    passed = violations.length === 0;
    return {
      seed: opts.seed,
      replay,
      dir: system.dir,
      durationMs: Date.now() - started,
      presented: opts.taps,
      accepted: record.accepted.length,
      declined: record.declined,
      retriedPresentations: record.retried,
      restarts,
      networkFaults: Object.fromEntries(Object.entries(system.proxies).map(([hop, p]) => [hop, { ...p.counts }])),
      drainMs: drain.ms,
      issuerTaps: checked.figures.issuerTaps,
      rejected: checked.figures.rejected,
      debitedCount: checked.figures.debitedCount,
      debited: checked.figures.debited.toString(),
      settled: checked.figures.settled.toString(),
      ridesCharged: checked.figures.ridesCharged,
      acceptsSeen: checked.figures.acceptsSeen,
      repeatsAccepted: checked.figures.repeatsAccepted,
      cards: checked.figures.cards,
      cardsMatching: checked.figures.cardsMatching,
      violations,
    };
  } finally {
    await system.close(opts.keepDir || !passed);
  }
}
