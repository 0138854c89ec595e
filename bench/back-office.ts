// `npm run bench:back-office -- [--batches 60] [--profile <dir>]`
// Each back-office server's own work per tap, in one process and without
// gRPC, on SQLite as the servers run it: the issuer's ingest, debit outbox
// and settlement (a fake authorizer answers every debit), then the
// authorizer's debits, ledger and settlement acknowledgement. Batches of
// 1000 taps over 200 cards. It shows what each server's single SQLite writer
// can do on its own, against which the end-to-end figure of `npm run bench`
// (gRPC, TLS, both servers and the generator on the same cores) is read.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { deduct, type DeductItemInput } from '../authorizer/deductions.js';
import { acknowledgeSettlement, nextSettlement } from '../authorizer/settlement.js';
import { deductStep } from '../issuer/deductions.js';
import { enrollCard } from '../issuer/enrollment.js';
import { settle } from '../issuer/settlement.js';
import { reportTaps } from '../issuer/taps.js';
import { agreementFor, fundedAccount, ISSUER, tempDb } from '../test/authorizer/helpers.js';
import { enrollRequest, newCard, openTestIssuer, tapsOf } from '../test/issuer/fixtures.js';
import type { CardImage } from '../gen/tapcredit/type/v1/card.js';
import type { Tap } from '../gen/tapcredit/type/v1/tap.js';

const TAPS_PER_BATCH = 1000;
const CARDS = 200;

export interface PhaseFigures {
  /** Milliseconds per 1000 taps, by phase. */
  msPer1000: Record<string, number>;
  tapsPerSecond: number;
}

export interface BackOfficeFigures {
  batches: number;
  issuer: PhaseFigures;
  authorizer: PhaseFigures;
}

/** Runs fn, timing it into phase. */
async function timed<T>(ms: Record<string, number>, phase: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    ms[phase] = (ms[phase] ?? 0) + performance.now() - t0;
  }
}

function figures(ms: Record<string, number>, batches: number): PhaseFigures {
  const total = Object.values(ms).reduce((a, b) => a + b, 0);
  return {
    msPer1000: Object.fromEntries(Object.entries(ms).map(([phase, t]) => [phase, Math.round((t / batches) * 10) / 10])),
    tapsPerSecond: Math.round((batches * TAPS_PER_BATCH) / (total / 1000)),
  };
}

/** CPU profile of the measured part (not the setup), when profileFile is given. */
async function profiled<T>(profileFile: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (!profileFile) return fn();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(profileFile, JSON.stringify(profile));
    session.disconnect();
  }
}

async function issuerFigures(batches: number, profileFile?: string): Promise<PhaseFigures> {
  const t = await openTestIssuer();
  try {
    const cards: { card: CardImage; agreementId: string }[] = [];
    for (let i = 0; i < CARDS; i++) {
      const e = enrollRequest(newCard(t.masterKey, `C${i}`), `req-${i}`, `acc-${i}`);
      cards.push({ card: e.card, agreementId: (await enrollCard(t.ctx, e.request)).enrollment!.agreementId });
    }
    // The taps are built beforehand, as terminals build them: each card's taps in counter order.
    let sequence = 1;
    const reports: Tap[][] = Array.from({ length: batches }, () =>
      cards.flatMap((c) => {
        const built = tapsOf(c.card, c.agreementId, 'T1', sequence, TAPS_PER_BATCH / CARDS);
        sequence += TAPS_PER_BATCH / CARDS;
        c.card = built.card;
        return built.taps;
      }),
    );
    const ms: Record<string, number> = {};
    await profiled(profileFile, async () => {
      for (const [n, taps] of reports.entries()) {
        await timed(ms, 'ingest (TapReport)', () => reportTaps(t.ctx, { terminalId: 'T1', taps }));
        await timed(ms, 'debit outbox (Deduct answered at once)', async () => {
          while (await deductStep(t.ctx, TAPS_PER_BATCH));
        });
        const items = taps.map((tap) => ({ deductionId: `ded-${tap.tapId}`, tapId: tap.tapId, amount: tap.fare! }));
        const total = { currencyCode: 'CNY', minorUnits: String(items.reduce((s, i) => s + BigInt(i.amount.minorUnits), 0n)) };
        await timed(ms, 'settlement (Settle)', () => settle(t.ctx, { settlementId: `stl-${n}`, authorizerId: 'authorizer-1', items, total }));
      }
    });
    const states = await t.db('taps').groupBy('state').select('state');
    if (states.length !== 1 || states[0].state !== 'SETTLED') throw new Error(`taps left in ${JSON.stringify(states)}`);
    return figures(ms, batches);
  } finally {
    await t.close();
  }
}

async function authorizerFigures(batches: number, profileFile?: string): Promise<PhaseFigures> {
  const t = await tempDb();
  try {
    const agreements: string[] = [];
    for (let i = 0; i < CARDS; i++) {
      await fundedAccount(t.db, i, 100_000_000n);
      agreements.push(await agreementFor(t.db, i));
    }
    const ms: Record<string, number> = {};
    let tap = 0;
    await profiled(profileFile, async () => {
      for (let n = 0; n < batches; n++) {
        const items: DeductItemInput[] = Array.from({ length: TAPS_PER_BATCH }, (_, i) => {
          const tapId = `T1:${++tap}`;
          return { requestId: tapId, agreementId: agreements[i % CARDS], amount: 200n, currency: 'CNY', tappedAt: new Date() };
        });
        const outcomes = await timed(ms, 'debits (Deduct)', () => deduct(t.db, ISSUER, items));
        if (outcomes.some((o) => o.status !== 'DEBITED')) throw new Error('a debit was not DEBITED');
        await timed(ms, 'settlement (form, then acknowledge)', async () => {
          for (let batch = await nextSettlement(t.db, ISSUER); batch; batch = await nextSettlement(t.db, ISSUER)) {
            await acknowledgeSettlement(t.db, batch.settlementId, { results: batch.items.map((i) => ({ tapId: i.tapId, matched: true, reason: '' })) });
          }
        });
      }
    });
    return figures(ms, batches);
  } finally {
    await t.close();
  }
}

export async function backOfficeFigures(batches: number, profileDir?: string): Promise<BackOfficeFigures> {
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  return {
    batches,
    issuer: await issuerFigures(batches, profileDir && join(profileDir, 'issuer-in-process.cpuprofile')),
    authorizer: await authorizerFigures(batches, profileDir && join(profileDir, 'authorizer-in-process.cpuprofile')),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const positive = (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
    return n;
  };
  const opts = new Command('bench:back-office')
    .description("each back-office server's own work per tap, in one process without gRPC, on SQLite")
    .option('--batches <n>', `batches of ${TAPS_PER_BATCH} taps`, positive, 60)
    .option('--profile <dir>', 'write a CPU profile of each measured part here')
    .parse()
    .opts<{ batches: number; profile?: string }>();
  const result = await backOfficeFigures(opts.batches, opts.profile);
  for (const server of ['issuer', 'authorizer'] as const) {
    const f = result[server];
    console.log(`${server}: ${f.tapsPerSecond.toLocaleString('en-US')} taps/s on its own`);
    for (const [phase, ms] of Object.entries(f.msPer1000)) console.log(`  ${phase}: ${ms} ms per 1000 taps`);
  }
}
