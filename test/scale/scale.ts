// The scale-out scenario: two issuer and two authorizer replicas as child
// processes (common/launcher.ts, mTLS with development certificates) on one
// PostgreSQL database per service, terminals listing both issuers, the
// issuers listing both authorizers and the authorizers listing both issuers.
// Riders tap until `killAfter` of the taps are accepted; then one replica of
// each service is killed (SIGKILL) and the taps go on through the others.
// Once every outbox is drained, the invariants of docs/design.md are checked.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import knexFactory from 'knex';
import { issueCard } from '../../common/card.js';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { presentCardImage } from '../../common/present-card.js';
import type { Db } from '../../common/db.js';
import { loadMasterKey } from '../../common/keys.js';
import { callUnary, channelTarget } from '../../common/rpc.js';
import { channelCredentials, loadTls } from '../../common/tls.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, TerminalServiceClient, declineReasonToJSON } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { removeDir, sleep, tempDir } from '../helpers/assert.js';
import { POSTGRES_URL, testDatabases } from '../helpers/databases.js';
import { freePorts } from '../../common/ports.js';
import { ServerProcess, prepareSharedFiles, type ExitRecord, type ServerSpec } from '../../common/launcher.js';
import { openSqlite } from '../faults/invariants.js';
import { invariantViolations, isDrained, outstanding, type AcceptedTap, type RunDatabases } from './checks.js';

const ISSUER_ID = 'issuer-1';
const AUTHORIZER_ID = 'authorizer-1';
const ISSUER_CODE = 'CITY1';
const CURRENCY = 'CNY';
const FARE = 200n;

export interface ScaleOptions {
  /** Taps presented (all accepted: every rider is funded for all of theirs). */
  taps: number;
  riders: number;
  terminals: number;
  /** Cards presented at once. */
  lanes: number;
  /** Share of the taps accepted before one issuer and one authorizer replica are killed. */
  killAfter: number;
  /** Lease time of the outbox claims: how soon a dead replica's work is taken over. */
  claimTtlMs: number;
  /** Outbox poll interval of every worker. */
  intervalMs: number;
  drainTimeoutMs: number;
  logLevel: string;
  keepDir?: boolean;
  log?: (line: string) => void;
}

export const SCALE_DEFAULTS: ScaleOptions = {
  taps: 5000,
  riders: 250,
  terminals: 4,
  lanes: 32,
  killAfter: 0.4,
  claimTtlMs: 3_000,
  intervalMs: 50,
  drainTimeoutMs: 120_000,
  logLevel: 'info',
};

export interface ScaleReport {
  taps: number;
  accepted: number;
  /** Presentations repeated because a terminal did not answer. */
  retried: number;
  killed: string[];
  /** Taps held by the killed issuer replica's claims at the kill (taken over after their lease). */
  claimedByKilledIssuer: number;
  /** Settlements held by the killed authorizer replica's claims at the kill. */
  claimedByKilledAuthorizer: number;
  /** Answered RPCs per server (from the access logs): how the calls spread over the replicas. */
  served: Record<string, Record<string, number>>;
  /** From the first tap presented to every tap settled. */
  durationMs: number;
  tapsPerSecond: number;
  /** Of which: presenting the taps, and draining the outboxes after the last one. */
  presentMs: number;
  drainMs: number;
  drained: boolean;
  pending: Record<string, number>;
  figures: Record<string, unknown>;
  violations: string[];
  dir: string;
}

/** Codes on which the driver presents the card again: the terminal did not answer. */
const TERMINAL_DOWN = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED]);

export async function runScaleScenario(o: ScaleOptions): Promise<ScaleReport> {
  if (!POSTGRES_URL) throw new Error('the scale scenario runs on PostgreSQL: set TAPCREDIT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)');
  const say = o.log ?? (() => {});
  const dir = tempDir('tapcredit-scale-');
  const databases = testDatabases('postgres', dir);
  const crashed: ExitRecord[] = [];
  const services = new Map<string, ServerProcess>();
  const clients: { close(): void }[] = [];
  const readers: Db[] = [];
  try {
    // Shared by the replicas of a service, made once before any starts: keys, the holder key, certificates (one identity per service).
    const terminalIds = Array.from({ length: o.terminals }, (_, i) => `T${i + 1}`);
    const shared = await prepareSharedFiles(dir, { issuerId: ISSUER_ID, authorizerId: AUTHORIZER_ID, terminalIds });
    const certs = shared.certsDir!;
    const urls = { issuer: await databases.url('issuer'), authorizer: await databases.url('authorizer') };
    const all = await freePorts(4 + terminalIds.length);
    const ports = {
      issuers: all.slice(0, 2),
      authorizers: all.slice(2, 4),
      terminals: all.slice(4),
    };
    const list = (ps: number[]) => ps.map((p) => `127.0.0.1:${p}`).join(',');
    const env = { ...shared.env, LOG_LEVEL: o.logLevel };
    const output = { logDir: join(dir, 'logs') };
    const interval = String(o.intervalMs);
    const common = ['--metrics-port', '0', '--claim-ttl-ms', String(o.claimTtlMs)];
    const specs: ServerSpec[] = [
      ...ports.authorizers.map((port, i) => ({
        name: `authorizer-${i + 1}`,
        entry: 'authorizer/main',
        env,
        output,
        args: [...common, '--replica-id', `authorizer-${i + 1}`, '--port', String(port), '--database-url', urls.authorizer, '--issuer-addresses', `${ISSUER_ID}=${list(ports.issuers)}`, '--settlement-interval-ms', interval],
      })),
      ...ports.issuers.map((port, i) => ({
        name: `issuer-${i + 1}`,
        entry: 'issuer/main',
        env,
        output,
        args: [...common, '--replica-id', `issuer-${i + 1}`, '--port', String(port), '--database-url', urls.issuer, '--issuer-id', ISSUER_ID, '--issuer-code', ISSUER_CODE, '--currency', CURRENCY, '--authorizer-address', list(ports.authorizers), '--deduct-interval-ms', interval],
      })),
      ...terminalIds.map((id, i) => ({
        name: `terminal-${id}`,
        entry: 'terminal/main',
        env,
        output,
        args: ['--metrics-port', '0', '--terminal-id', id, '--port', String(ports.terminals[i]), '--database-url', join(dir, `terminal-${id}.sqlite`), '--issuer-code', ISSUER_CODE, '--issuer-address', list(ports.issuers), '--fare-minor-units', String(FARE), '--currency', CURRENCY, '--forward-interval-ms', interval],
      })),
    ];
    for (const spec of specs) services.set(spec.name, new ServerProcess(spec, (exit) => crashed.push(exit)));
    say(`starting ${services.size} servers in ${dir}`);
    await Promise.all([...services.values()].map((s) => s.start()));

    const tlsOf = (file: string) => loadTls({ ca: join(certs, 'ca.pem'), cert: join(certs, `${file}.pem`), key: join(certs, `${file}.key`) });
    const ops = tlsOf('ops');
    const phone = tlsOf('phone');
    const balanced = <C extends { close(): void }>(Client: new (...args: any[]) => C, addresses: string, creds: ReturnType<typeof channelCredentials>) => {
      const { target, options } = channelTarget(addresses);
      const client = new Client(target, creds, options);
      clients.push(client);
      return client;
    };
    const authorizer = balanced(AuthorizerServiceClient, list(ports.authorizers), channelCredentials(ops, { role: 'authorizer' }));
    const issuerOps = balanced(IssuerServiceClient, list(ports.issuers), channelCredentials(ops, { role: 'issuer' }));
    const terminals = ports.terminals.map((p) => balanced(TerminalServiceClient, `127.0.0.1:${p}`, channelCredentials(phone, { role: 'terminal' })));

    // Riders: an account funded for every fare of theirs, and an enrolled card,
    // enrolled by ops as at a service desk (bulk provisioning: no rider sign-in each).
    const masterKey = loadMasterKey(shared.env.TAPCREDIT_MASTER_KEY_FILE);
    const perRider = Math.ceil(o.taps / o.riders);
    const cards: CardImage[] = new Array(o.riders);
    await inLanes(o.riders, 16, async (i) => {
      const accountId = `acc-${i}`;
      const holder = { name: `Rider ${i}`, phoneNumber: `+86139${String(i).padStart(8, '0')}` };
      await callUnary(authorizer, authorizer.openAccount, { accountId, holder, currencyCode: CURRENCY, creditLimit: { currencyCode: CURRENCY, minorUnits: '0' } });
      await callUnary(authorizer, authorizer.topUp, { requestId: `top-up-${i}`, accountId, amount: { currencyCode: CURRENCY, minorUnits: (FARE * BigInt(perRider)).toString() } });
      const blank = issueCard(masterKey, { cardId: `C${String(i).padStart(5, '0')}`, issuerCode: ISSUER_CODE, expiresOn: '2099-12-31' });
      const card = new CardEmulator(blank);
      const { proof } = readForEnrollment(card);
      const enrolled = await callUnary(issuerOps, issuerOps.enrollCard, {
        requestId: randomUUID(),
        card: { issuerCode: ISSUER_CODE, expiresOn: blank.expiresOn, proof },
        rider: holder,
        accountId,
      });
      card.writeCreditFlag(enrolled.creditFlag!);
      cards[i] = card.card;
    });
    say(`${o.riders} riders enrolled; presenting ${o.taps} taps at ${o.terminals} terminals, ${o.lanes} at once`);

    const dbs: RunDatabases = {
      issuer: knexFactory({ client: 'pg', connection: urls.issuer, pool: { min: 0, max: 2 } }),
      authorizer: knexFactory({ client: 'pg', connection: urls.authorizer, pool: { min: 0, max: 2 } }),
      terminals: new Map(terminalIds.map((id) => [id, openSqlite(join(dir, `terminal-${id}.sqlite`))])),
    };
    readers.push(dbs.issuer, dbs.authorizer, ...dbs.terminals.values());

    const accepted: AcceptedTap[] = [];
    const errors: string[] = [];
    let retried = 0;
    const killed: string[] = [];
    let claimedByKilledIssuer = 0;
    let claimedByKilledAuthorizer = 0;
    let killing: Promise<void> | undefined;
    const killAt = Math.floor(o.taps * o.killAfter);
    const held = async (db: Db, table: string, owner: string) =>
      Number((await db(table).where('claimed_by', 'like', `${owner}#%`).where('claim_expires_at', '>', String(Date.now())).count({ n: '*' }))[0].n);
    /** SIGKILLs a replica, preferably while it holds claims (so that they must be taken over); resolves how many it held. */
    const killHolding = async (name: string, holding: () => Promise<number>) => {
      const until = Date.now() + 5_000;
      while (Date.now() < until && (await holding()) === 0) await sleep(2);
      await services.get(name)!.signal('SIGKILL');
      killed.push(name);
      return holding();
    };
    const kill = async () => {
      // One replica of each: an issuer (it also serves terminals), an authorizer (it also settles).
      const [issuer, authorizerReplica] = ['issuer-2', 'authorizer-1'];
      claimedByKilledIssuer = await killHolding(issuer, async () => (await held(dbs.issuer, 'taps', issuer)) + (await held(dbs.issuer, 'debit_attempts', issuer)));
      claimedByKilledAuthorizer = await killHolding(authorizerReplica, () => held(dbs.authorizer, 'settlements', authorizerReplica));
      say(`killed ${issuer} and ${authorizerReplica} (SIGKILL) after ${accepted.length} accepted taps; they held ${claimedByKilledIssuer} taps and ${claimedByKilledAuthorizer} settlements`);
    };

    const started = Date.now();
    // Tap i is card i % riders at terminal (i / riders + card) % terminals: a card's taps are in order, spread over the terminals.
    const perCard = Array.from({ length: o.riders }, () => [] as number[]);
    for (let i = 0; i < o.taps; i++) perCard[i % o.riders].push(i);
    let nextCard = 0;
    await Promise.all(
      Array.from({ length: Math.min(o.lanes, o.riders) }, async () => {
        for (let c = nextCard++; c < o.riders; c = nextCard++) {
          for (const i of perCard[c]) {
            const t = (Math.floor(i / o.riders) + c) % o.terminals;
            for (let attempt = 1; ; attempt++) {
              try {
                const res = await presentCardImage(terminals[t], cards[c], 10_000);
                cards[c] = res.card;
                if (res.decision === Decision.DECISION_ACCEPT) accepted.push({ tapId: res.tap!.tapId, cardId: cards[c].cardId, terminalId: terminalIds[t] });
                else errors.push(`card ${cards[c].cardId} declined at ${terminalIds[t]}: ${declineReasonToJSON(res.declineReason!)}`);
                break;
              } catch (err) {
                const e = err as ServiceError & { card?: CardImage };
                if (e.card) cards[c] = e.card;
                if (!TERMINAL_DOWN.has(e.code) || attempt >= 20) {
                  errors.push(`card ${cards[c].cardId} at ${terminalIds[t]}: ${e.message}`);
                  break;
                }
                retried++;
                await sleep(50 * attempt);
              }
            }
            if (accepted.length >= killAt && !killing) killing = kill();
          }
        }
      }),
    );
    await killing;
    const presentMs = Date.now() - started;
    say(`${accepted.length} taps accepted in ${(presentMs / 1000).toFixed(1)} s; draining`);

    const drainStarted = Date.now();
    let drained = false;
    while (Date.now() - drainStarted < o.drainTimeoutMs) {
      if (await isDrained(dbs)) {
        drained = true;
        break;
      }
      await sleep(100);
    }
    const durationMs = Date.now() - started;
    const drainMs = Date.now() - drainStarted;
    const pending = await outstanding(dbs);
    say(drained ? `drained in ${(drainMs / 1000).toFixed(1)} s; checking the invariants` : `not drained after ${drainMs} ms: ${JSON.stringify(pending)}`);

    const checked = await invariantViolations(dbs, accepted, issuerOps, { issuerId: ISSUER_ID, currency: CURRENCY });
    const violations = [...errors.slice(0, 20).map((e) => `driver: ${e}`), ...checked.violations];
    if (!drained) violations.push(`not drained within ${o.drainTimeoutMs} ms: ${JSON.stringify(pending)}`);
    if (accepted.length !== o.taps) violations.push(`${accepted.length} of ${o.taps} taps accepted`);
    for (const c of crashed) violations.push(`${c.name} exited on its own (${c.signal ?? `exit ${c.code}`}); see its log`);
    // The survivors stop gracefully: each must exit 0.
    for (const s of services.values()) {
      if (!s.running) continue;
      const exit = await s.signal('SIGTERM');
      if (exit.code !== 0) violations.push(`${s.spec.name} exited ${exit.code ?? exit.signal} on SIGTERM`);
    }
    return {
      taps: o.taps,
      accepted: accepted.length,
      retried,
      killed,
      claimedByKilledIssuer,
      claimedByKilledAuthorizer,
      served: servedByServer(dir, [...services.keys()]),
      durationMs,
      tapsPerSecond: Math.round((accepted.length / durationMs) * 1000),
      presentMs,
      drainMs,
      drained,
      pending,
      figures: { ...checked.figures, debited: String(checked.figures.debited), settled: String(checked.figures.settled) },
      violations,
      dir,
    };
  } finally {
    for (const c of clients) c.close();
    for (const s of services.values()) if (s.running) await s.signal('SIGKILL');
    for (const db of readers) await db.destroy();
    await databases.drop();
    if (!o.keepDir) removeDir(dir);
  }
}

/** Runs job(0..n-1), `lanes` at a time. */
async function inLanes(n: number, lanes: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(lanes, n) }, async () => {
    for (let i = next++; i < n; i = next++) await job(i);
  }));
}

/** Counts each server's answered RPCs by method from its log file (access log lines). */
function servedByServer(dir: string, names: string[]): Record<string, Record<string, number>> {
  const served: Record<string, Record<string, number>> = {};
  for (const name of names) {
    const counts: Record<string, number> = {};
    let text = '';
    try {
      text = readFileSync(join(dir, 'logs', `${name}.log`), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line.includes('"msg":"rpc"')) continue;
      try {
        const l = JSON.parse(line);
        if (l.code === 'OK') counts[l.rpc] = (counts[l.rpc] ?? 0) + 1;
      } catch {
        // a line cut by SIGKILL
      }
    }
    served[name] = counts;
  }
  return served;
}
