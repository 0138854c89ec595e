// `npm run simulate -- [--minutes 2] [--riders 300] [--terminals 3] [--rate 15]`
// A city's day in a few minutes, at a gentle rate: the three servers as
// child processes (mTLS), riders with accounts and enrolled cards tapping at
// the terminals with a morning and an evening peak, and what a day brings:
// riders whose balance runs out (debts, then deny-listed at the gates), some
// of them topping up and settling their debts, cards reported lost, a daily
// fare cap, and a few cards that are not ours (no credit flag, a copy
// without the card's key). Ends with the day's summary and reconciliation:
// the issuer's report, no accepted tap lost, debited = settled, the
// authorizer's ledger balanced.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import knexFactory from 'knex';
import { ledgerViolations } from '../authorizer/ledger.js';
import { issueCard } from '../common/card.js';
import { callUnary } from '../common/rpc.js';
import { AuthorizerServiceClient } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient, tapStateToJSON, type GetReconciliationReportResponse } from '../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import { serviceDay } from '../issuer/service-day.js';
import { Cluster, CURRENCY, ISSUER_CODE, ISSUER_ID } from './cluster.js';
import { drive } from './drive.js';
import { IssuerStore } from './issuer-store.js';
import { Progress } from './progress.js';
import { CardPool, enrollRiders, type Rider } from './riders.js';
import { setTimeout as sleep } from 'node:timers/promises';

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
};

const positive = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
};

const opts = new Command()
  .name('simulate')
  .description("a city's day in a few minutes at a gentle rate, ending with the day's summary and reconciliation")
  .option('--minutes <n>', 'length of the simulated day, in minutes (fractions allowed)', positive, 2)
  .option('--riders <n>', 'riders, each with an account and an enrolled card', int, 300)
  .option('--terminals <n>', 'terminal processes (gates)', int, 3)
  .option('--rate <taps/s>', 'average taps per second over the day (peaks reach about twice that)', int, 15)
  .option('--insecure', 'plaintext on loopback instead of mTLS')
  .option('--keep', 'keep the data directory (SQLite files, logs)')
  .parse()
  .opts<{ minutes: number; riders: number; terminals: number; rate: number; insecure?: boolean; keep?: boolean }>();

const FARE = 200n;
const DAILY_CAP = 1000n; // five rides
const money = (m: string | bigint | undefined) => `${(Number(m ?? 0) / 100).toFixed(2)} ${CURRENCY}`;
const progress = new Progress();

/** Taps per second at fraction f of the day: a quiet base, a morning and an evening peak; averages about `rate`. */
// Each peak adds 1.1 * 0.08 * sqrt(pi) ~ 0.16 of the rate on average; the base makes up the rest.
const dayCurve = (rate: number) => (f: number) => rate * (0.69 + 1.1 * Math.exp(-(((f - 0.3) / 0.08) ** 2)) + 1.1 * Math.exp(-(((f - 0.75) / 0.08) ** 2)));

const dir = mkdtempSync(join(tmpdir(), 'tapcredit-simulate-'));
progress.log(`tapcredit simulate: ${opts.riders} riders, ${opts.terminals} terminals, a ${opts.minutes}-minute day at about ${opts.rate} taps/s; data in ${dir}`);
const cluster = await Cluster.start({
  dir,
  terminals: opts.terminals,
  virtualTerminals: [],
  tls: !opts.insecure,
  logLevel: 'info',
  fareMinorUnits: Number(FARE),
  issuerEnv: {
    ISSUER_DAILY_CAP_MINOR_UNITS: DAILY_CAP.toString(),
    // Debts are retried every few seconds of the simulated day instead of hourly.
    ISSUER_DEBT_RETRY_BASE_MS: '5000',
    ISSUER_DEBT_RETRY_MAX_MS: '20000',
  },
});
const ops = { role: 'ops' as const, name: 'admin' };
const phone = { role: 'phone' as const, name: 'phone-app' };
const authorizer = new AuthorizerServiceClient(cluster.authorizer.address, cluster.credentials(ops, 'authorizer'));
const issuerOps = new IssuerServiceClient(cluster.issuer.address, cluster.credentials(ops, 'issuer'));
const issuerPhone = new IssuerServiceClient(cluster.issuer.address, cluster.credentials(phone, 'issuer'));
const terminals = cluster.terminals.map((t) => new TerminalServiceClient(t.address, cluster.credentials(phone, 'terminal')));
const authorizerPhone = new AuthorizerServiceClient(cluster.authorizer.address, cluster.credentials(phone, 'authorizer'));
/** A rider's access token for their own calls through the phone app (ops sets the password, the rider signs in). */
async function signedIn(accountId: string): Promise<string> {
  const password = `password of ${accountId}`;
  await callUnary(authorizer, authorizer.setRiderPassword, { accountId, newPassword: password, currentPassword: '' });
  const { tokens } = await callUnary(authorizerPhone, authorizerPhone.signIn, { accountId, password, audience: ISSUER_ID });
  return tokens!.accessToken;
}
const store = IssuerStore.open(join(dir, 'issuer.sqlite'));

try {
  // One rider in twenty starts the day with one and a half fares on the account: a debt waiting to happen.
  const lowBalance = (i: number) => i % 20 === 7;
  const riders = await enrollRiders(cluster, {
    riders: opts.riders,
    topUp: (i) => (lowBalance(i) ? 300n : 100_000n),
    onProgress: (done) => progress.update('enroll', done / opts.riders, `${done} / ${opts.riders} riders`),
  });
  progress.done();
  // Cards that are not ours: one never enrolled (no credit flag), one a copy of a rider's card without its key.
  const fakes: Rider[] = [
    { ...riders[0], index: riders.length, card: issueCard(randomBytes(32), { cardId: 'X-UNENROLLED', issuerCode: ISSUER_CODE, expiresOn: '2099-12-31' }) },
    { ...riders[1], index: riders.length + 1, card: { ...riders[1].card, cardKey: randomBytes(16) } },
  ];
  const everyone = [...riders, ...fakes];
  const pool = new CardPool(everyone);

  const durationMs = opts.minutes * 60_000;
  const dayStart = Date.now();
  const lost: string[] = [];
  const events: string[] = [];
  // The day's events, at fractions of the day.
  const timeline = (async () => {
    await sleep(durationMs * 0.4);
    for (const r of riders.filter((r) => r.index % 50 === 11).slice(0, 3)) {
      await callUnary(issuerPhone, issuerPhone.reportCardLost, { cardId: r.card.cardId, accountId: r.accountId }, undefined, await signedIn(r.accountId));
      lost.push(r.card.cardId);
    }
    events.push(`${lost.length} cards reported lost at 40% of the day`);
    await sleep(durationMs * 0.2);
    let recovered = 0;
    const debtors = riders.filter((r) => lowBalance(r.index)).filter((_, k) => k % 2 === 0);
    for (const r of debtors) {
      await callUnary(authorizer, authorizer.topUp, { requestId: `topup-${randomUUID()}`, accountId: r.accountId, amount: { currencyCode: CURRENCY, minorUnits: '2000' } });
      const res = await callUnary(issuerPhone, issuerPhone.retryDebts, { cardId: r.card.cardId }, undefined, await signedIn(r.accountId));
      recovered += res.recoveredCount;
    }
    events.push(`${debtors.length} riders with little money topped up at 60% of the day and asked to settle their debts: ${recovered} debts recovered at once`);
  })();

  const day = await drive({
    pool,
    terminals,
    readersPerTerminal: 2,
    durationMs,
    rate: dayCurve(opts.rate),
    onTick: (d, ms) => progress.update('day', ms / durationMs, `${d.presented} presented, ${d.accepted} accepted, ${Object.values(d.declined).reduce((a, b) => a + b, 0)} declined`),
  });
  progress.done();
  await timeline;

  // Evening: the outboxes drain (every accepted tap reaches the issuer and is debited or becomes a debt, and debits are settled).
  const drainStart = Date.now();
  for (;;) {
    const counts = await store.stateCounts(cluster.terminalIds);
    const atIssuer = Object.values(counts).reduce((a, b) => a + b, 0);
    const inFlight = (counts.RECEIVED ?? 0) + (counts.DEDUCTING ?? 0) + (counts.DEDUCTED ?? 0);
    progress.update('evening', atIssuer / Math.max(1, day.accepted), `${atIssuer} / ${day.accepted} taps at the issuer, ${inFlight} not final yet`);
    if ((atIssuer >= day.accepted && inFlight === 0) || Date.now() - drainStart > 120_000) break;
    await sleep(500);
  }
  progress.done();

  // --- the day's summary ---
  const cap = { dayStartMinutes: 240, utcOffsetMinutes: 480 };
  const days = [...new Set([serviceDay(dayStart, cap), serviceDay(Date.now(), cap)])];
  const reports: GetReconciliationReportResponse[] = [];
  for (const d of days) reports.push(await callUnary(issuerOps, issuerOps.getReconciliationReport, { serviceDay: d, pageSize: 100, pageToken: '' }));
  const counts = await store.stateCounts(cluster.terminalIds);
  const atIssuer = Object.values(counts).reduce((a, b) => a + b, 0);
  const sum = (f: (r: GetReconciliationReportResponse) => string | undefined) => reports.reduce((s, r) => s + BigInt(f(r) ?? '0'), 0n);
  const debitedCount = reports.reduce((s, r) => s + Number(r.debitedCount), 0);
  const settledCount = reports.reduce((s, r) => s + Number(r.settledCount), 0);
  const debited = sum((r) => r.debited?.minorUnits);
  const settled = sum((r) => r.settled?.minorUnits);
  const unsettled = sum((r) => r.unsettled?.minorUnits);
  const mismatches = reports.reduce((s, r) => s + Number(r.mismatchCount), 0);

  const authorizerDb = knexFactory({ client: 'sqlite3', connection: { filename: join(dir, 'authorizer.sqlite') }, useNullAsDefault: true, pool: { min: 1, max: 1 } });
  const ledgerProblems = await ledgerViolations(authorizerDb);
  await authorizerDb.destroy();

  const lines: string[] = [];
  const out = (s = '') => lines.push(s);
  out(`# A day in the city (${opts.minutes} minutes, ${new Date(dayStart).toISOString()})`);
  out();
  out(`Riders: ${riders.length} with an account and an enrolled card (${riders.filter((r) => lowBalance(r.index)).length} starting with ${money(300n)}), plus ${fakes.length} cards that are not ours. Gates: ${cluster.terminalIds.join(', ')}. Fare ${money(FARE)}, daily cap ${money(DAILY_CAP)}.`);
  for (const e of events) out(`- ${e}`);
  out();
  out(`Taps presented: ${day.presented}; accepted: ${day.accepted}; declined: ${Object.values(day.declined).reduce((a, b) => a + b, 0)}${Object.keys(day.errors).length ? `; failed calls: ${JSON.stringify(day.errors)}` : ''}`);
  for (const [reason, n] of Object.entries(day.declined).sort((a, b) => b[1] - a[1])) out(`  declined ${reason}: ${n}`);
  out(`PresentCard latency p50 / p99 / max: ${day.latency.summary().p50Ms} / ${day.latency.summary().p99Ms} / ${day.latency.summary().maxMs} ms`);
  out();
  out(`At the issuer (service day${days.length > 1 ? 's' : ''} ${days.join(', ')}):`);
  for (const r of reports) {
    for (const s of r.states) {
      out(`  ${tapStateToJSON(s.state).replace(/^TAP_STATE_/, '').padEnd(10)} ${String(s.tapCount).padStart(6)} taps, fares ${money(s.fares?.minorUnits)}, charged ${money(s.charged?.minorUnits)}`);
    }
  }
  out(`Debited: ${debitedCount} taps, ${money(debited)} (capped taps are charged nothing)`);
  out(`Debts outstanding: ${counts.DECLINED ?? 0} taps (DECLINED, retried on schedule; their cards are on the deny list)`);
  out(`Settled: ${settledCount} taps, ${money(settled)}; unsettled ${money(unsettled)}; mismatched settlement items: ${mismatches}`);
  out();
  const checks: [string, boolean][] = [
    [`no accepted tap lost: ${day.accepted} accepted at the gates, ${atIssuer} at the issuer`, atIssuer === day.accepted],
    [`debited = settled + unsettled: ${money(debited)} = ${money(settled)} + ${money(unsettled)}`, debited === settled + unsettled],
    [`everything debited is settled by the evening`, unsettled === 0n && debitedCount === settledCount],
    [`no settlement item mismatched`, mismatches === 0],
    [`the authorizer's ledger balances${ledgerProblems.length ? `: ${ledgerProblems.slice(0, 3).join('; ')}` : ''}`, ledgerProblems.length === 0],
  ];
  out('Reconciliation:');
  for (const [text, ok] of checks) out(`  ${ok ? 'OK  ' : 'FAIL'} ${text}`);
  console.log(lines.join('\n'));
  process.exitCode = checks.every(([, ok]) => ok) ? 0 : 1;
} finally {
  for (const c of [authorizer, authorizerPhone, issuerOps, issuerPhone, ...terminals]) c.close();
  await store.close();
  await cluster.stop();
  if (!opts.keep) rmSync(dir, { recursive: true, force: true });
  else progress.log(`data directory kept in ${dir}`);
}
