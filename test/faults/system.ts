// The system under fault injection: the authorizer, the issuer and the
// terminals as child processes (common/launcher.ts, plaintext on loopback), a
// fault proxy on each hop between them (terminal -> issuer, issuer ->
// authorizer, authorizer -> issuer), direct clients for the test, and the
// steps every scenario shares: enroll riders, present a card until a
// terminal answers, drain the outboxes, stop everything, check invariants.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { issueCard } from '../../common/card.js';
import { CardEmulator, readForEnrollment } from '../../common/card-emulator.js';
import { presentCardImage } from '../../common/present-card.js';
import type { Db } from '../../common/db.js';
import { loadMasterKey } from '../../common/keys.js';
import { ServerProcess, prepareSharedFiles, type ExitRecord, type ServerSpec } from '../../common/launcher.js';
import { callUnary } from '../../common/rpc.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient, type GetReconciliationReportResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { Decision, DeclineReason, TerminalServiceClient, declineReasonToJSON } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { removeDir, tempDir } from '../helpers/assert.js';
import { freePorts } from '../../common/ports.js';
import { checkInvariants, openSqlite, pendingWork, type AcceptedTap, type InvariantFigures } from './invariants.js';
import type { Prng } from './prng.js';
import { FaultProxy } from './proxy.js';

export const ISSUER_ID = 'issuer-1';
export const ISSUER_CODE = 'CITY1';
export const CURRENCY = 'CNY';
export const FARE = 200n;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Codes on which the driver presents the card again: the terminal is down or did not answer. */
const TERMINAL_DOWN = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED]);

/** A call from the test to a server that may have just restarted: the client's channel can still be backing off, so UNAVAILABLE is retried. */
async function ask<T>(call: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if ((err as ServiceError).code !== status.UNAVAILABLE || Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

export type Hop = 'terminal->issuer' | 'issuer->authorizer' | 'authorizer->issuer';

export interface SystemOptions {
  terminals: number;
  /** Mean gap between faults on each hop while faults are on. */
  meanFaultGapMs: number;
  /** LOG_LEVEL of the servers (their logs go to <dir>/logs). */
  logLevel: string;
  /** Outbox poll interval of every worker. */
  intervalMs?: number;
  /**
   * Lease of an outbox batch (issuer and authorizer, see common/leases.ts):
   * the rows a killed process had claimed are resent once it expires. Short
   * here so that restarts do not idle the run; 3 s by default.
   */
  claimTtlMs?: number;
  /** The repeat window of the terminals and the issuer (--repeat-window-ms); their default (60 s) when unset. */
  repeatWindowMs?: number;
}

/** What the driver saw. */
export class DriverRecord {
  readonly accepted: AcceptedTap[] = [];
  readonly declined: Record<string, number> = {};
  /** Presentations repeated because the terminal did not answer. */
  retried = 0;
  /** Answers a terminal must never give (INTERNAL, INVALID_ARGUMENT, ...). */
  readonly errors: string[] = [];
}

export class FaultSystem {
  /** Servers that exited without being asked to. */
  readonly crashed: ExitRecord[] = [];
  readonly services: Map<string, ServerProcess>;
  private dbs: { issuer: Db; authorizer: Db; terminals: Map<string, Db> } | undefined;

  private constructor(
    readonly dir: string,
    readonly masterKey: Buffer,
    readonly terminalIds: string[],
    specs: ServerSpec[],
    readonly proxies: Record<Hop, FaultProxy>,
    readonly clients: { authorizer: AuthorizerServiceClient; issuer: IssuerServiceClient; terminals: TerminalServiceClient[] },
    readonly files: { authorizer: string; issuer: string; terminals: Map<string, string> },
  ) {
    this.services = new Map(specs.map((s) => [s.name, new ServerProcess(s, (exit) => this.crashed.push(exit))]));
  }

  /** Creates the run directory, keys, proxies and processes, and starts every server. */
  static async start(prng: Prng, opts: SystemOptions): Promise<FaultSystem> {
    const dir = tempDir('tapcredit-faults-');
    // Keys made once, before any server starts (plaintext: no certificates).
    const shared = await prepareSharedFiles(dir);
    const terminalIds = Array.from({ length: opts.terminals }, (_, i) => `T${i + 1}`);
    // Every port at once, the proxies' too, so none is handed out twice (a proxy on a server's port would pass for the server).
    const [issuerPort, authorizerPort, ...rest] = await freePorts(2 + terminalIds.length + 3);
    const ports = { issuer: issuerPort, authorizer: authorizerPort, terminals: rest.slice(0, terminalIds.length) };
    const [toIssuer, toAuthorizer, backToIssuer] = rest.slice(terminalIds.length);
    const proxy = (hop: Hop, port: number) => new FaultProxy(hop, port, prng.fork(`proxy ${hop}`), opts.meanFaultGapMs);
    const proxies: Record<Hop, FaultProxy> = {
      'terminal->issuer': proxy('terminal->issuer', ports.issuer),
      'issuer->authorizer': proxy('issuer->authorizer', ports.authorizer),
      'authorizer->issuer': proxy('authorizer->issuer', ports.issuer),
    };
    const via: Record<Hop, number> = {
      'terminal->issuer': await proxies['terminal->issuer'].listen(toIssuer),
      'issuer->authorizer': await proxies['issuer->authorizer'].listen(toAuthorizer),
      'authorizer->issuer': await proxies['authorizer->issuer'].listen(backToIssuer),
    };
    const files = {
      authorizer: join(dir, 'authorizer.sqlite'),
      issuer: join(dir, 'issuer.sqlite'),
      terminals: new Map(terminalIds.map((id) => [id, join(dir, `terminal-${id}.sqlite`)])),
    };
    const env = { ...shared.env, LOG_LEVEL: opts.logLevel };
    const output = { logDir: join(dir, 'logs') };
    const interval = String(opts.intervalMs ?? 50);
    // Plaintext on loopback (--insecure): TLS would not change what the proxies break; a free metrics port each.
    const common = ['--metrics-port', '0', '--insecure'];
    const leases = ['--claim-ttl-ms', String(opts.claimTtlMs ?? 3000)];
    const specs: ServerSpec[] = [
      {
        name: 'authorizer',
        entry: 'authorizer/main',
        env,
        output,
        args: [...common, ...leases, '--port', String(ports.authorizer), '--database-url', files.authorizer, '--issuer-addresses', `${ISSUER_ID}=127.0.0.1:${via['authorizer->issuer']}`, '--settlement-interval-ms', interval],
      },
      {
        name: 'issuer',
        entry: 'issuer/main',
        env,
        output,
        args: [...common, ...leases, '--port', String(ports.issuer), '--database-url', files.issuer, '--issuer-id', ISSUER_ID, '--issuer-code', ISSUER_CODE, '--currency', CURRENCY, '--authorizer-address', `127.0.0.1:${via['issuer->authorizer']}`, '--deduct-interval-ms', interval, ...(opts.repeatWindowMs !== undefined ? ['--repeat-window-ms', String(opts.repeatWindowMs)] : [])],
      },
      ...terminalIds.map((id, i) => ({
        name: `terminal-${id}`,
        entry: 'terminal/main',
        env,
        output,
        args: [...common, '--terminal-id', id, '--port', String(ports.terminals[i]), '--database-url', files.terminals.get(id)!, '--issuer-code', ISSUER_CODE, '--issuer-address', `127.0.0.1:${via['terminal->issuer']}`, '--fare-minor-units', String(FARE), '--currency', CURRENCY, '--forward-interval-ms', interval, ...(opts.repeatWindowMs !== undefined ? ['--repeat-window-ms', String(opts.repeatWindowMs)] : [])],
      })),
    ];
    const insecure = credentials.createInsecure();
    const clients = {
      authorizer: new AuthorizerServiceClient(`127.0.0.1:${ports.authorizer}`, insecure),
      issuer: new IssuerServiceClient(`127.0.0.1:${ports.issuer}`, insecure),
      terminals: ports.terminals.map((p) => new TerminalServiceClient(`127.0.0.1:${p}`, insecure)),
    };
    const system = new FaultSystem(dir, loadMasterKey(shared.env.TAPCREDIT_MASTER_KEY_FILE), terminalIds, specs, proxies, clients, files);
    try {
      await Promise.all([...system.services.values()].map((s) => s.start()));
    } catch (err) {
      await system.close(true);
      throw err;
    }
    return system;
  }

  service(name: string): ServerProcess {
    const s = this.services.get(name);
    if (!s) throw new Error(`no server ${name}`);
    return s;
  }

  setFaults(on: boolean): void {
    for (const p of Object.values(this.proxies)) p.setFaults(on);
  }

  /**
   * Opens accounts (a share of them funded for one to three fares only, so
   * their later debits decline) and enrolls one card per account, as the
   * phone app does.
   */
  async enrollRiders(count: number, prng: Prng, opts: { underfundedShare: number; faresPerRider: number }): Promise<CardImage[]> {
    const { authorizer, issuer } = this.clients;
    const cards: CardImage[] = [];
    for (let i = 0; i < count; i++) {
      const accountId = `acc-${i}`;
      const holder = { name: `Rider ${i}`, phoneNumber: `+86139${String(i).padStart(8, '0')}` };
      const fares = prng.chance(opts.underfundedShare) ? prng.int(1, 3) : opts.faresPerRider;
      await callUnary(authorizer, authorizer.openAccount, { accountId, holder, currencyCode: CURRENCY, creditLimit: { currencyCode: CURRENCY, minorUnits: '0' } });
      await callUnary(authorizer, authorizer.topUp, { requestId: `top-up-${i}`, accountId, amount: { currencyCode: CURRENCY, minorUnits: (FARE * BigInt(fares)).toString() } });
      const blank = issueCard(this.masterKey, { cardId: `C${String(i).padStart(4, '0')}`, issuerCode: ISSUER_CODE, expiresOn: '2099-12-31' });
      const card = new CardEmulator(blank);
      const { proof } = readForEnrollment(card);
      const enrolled = await callUnary(issuer, issuer.enrollCard, {
        requestId: randomUUID(),
        card: { issuerCode: ISSUER_CODE, expiresOn: blank.expiresOn, proof },
        rider: holder,
        accountId,
      });
      card.writeCreditFlag(enrolled.creditFlag!);
      cards.push(card.card);
    }
    return cards;
  }

  /**
   * Presents cards[c] at terminal t once. The card keeps the counter it
   * reached, answer or not, as a real card does. Resolves the failed call's
   * code, or undefined when the terminal answered.
   */
  async presentOnce(cards: CardImage[], c: number, t: number, record: DriverRecord): Promise<status | undefined> {
    const client = this.clients.terminals[t];
    try {
      const response = await presentCardImage(client, cards[c], 5_000);
      cards[c] = response.card;
      if (response.decision === Decision.DECISION_ACCEPT) {
        const repeatOf = response.tap!.repeatOfTapId;
        record.accepted.push({ tapId: response.tap!.tapId, cardId: cards[c].cardId, terminalId: this.terminalIds[t], ...(repeatOf ? { repeatOf } : {}) });
      } else {
        const reason = declineReasonToJSON(response.declineReason ?? DeclineReason.DECLINE_REASON_UNSPECIFIED);
        record.declined[reason] = (record.declined[reason] ?? 0) + 1;
      }
      return undefined;
    } catch (err) {
      const e = err as ServiceError & { card?: CardImage };
      if (e.card) cards[c] = e.card;
      if (!TERMINAL_DOWN.has(e.code)) record.errors.push(`card ${cards[c].cardId} at terminal ${this.terminalIds[t]}: ${status[e.code] ?? ''} ${e.message}`);
      return e.code;
    }
  }

  /**
   * Presents cards[c] at terminal t until it answers, as a rider in front of
   * a gate that did not open taps again: at the same gate, which may be
   * restarting (its repeat window, 60 s, outlasts any restart of a run).
   */
  async present(cards: CardImage[], c: number, t: number, record: DriverRecord, giveUpMs = 50_000): Promise<void> {
    const giveUpAt = Date.now() + giveUpMs;
    for (let attempt = 1; ; attempt++) {
      const failed = await this.presentOnce(cards, c, t, record);
      if (failed === undefined || !TERMINAL_DOWN.has(failed)) return;
      if (Date.now() > giveUpAt) {
        record.errors.push(`card ${cards[c].cardId}: terminal ${this.terminalIds[t]} did not answer within ${giveUpMs} ms`);
        return;
      }
      record.retried++;
      await sleep(Math.min(20 * attempt, 200));
    }
  }

  /** Read connections to the SQLite files (opened once, while or after the servers run). */
  databases(): { issuer: Db; authorizer: Db; terminals: Map<string, Db> } {
    this.dbs ??= {
      issuer: openSqlite(this.files.issuer),
      authorizer: openSqlite(this.files.authorizer),
      terminals: new Map([...this.files.terminals].map(([id, file]) => [id, openSqlite(file)])),
    };
    return this.dbs;
  }

  /** Starts any server that is down, then waits until every outbox is empty (twice in a row). */
  async drain(timeoutMs: number): Promise<{ drained: boolean; ms: number; pending: Record<string, number> }> {
    for (const s of this.services.values()) if (!s.running) await s.start();
    const started = Date.now();
    let quiet = 0;
    let pending: Record<string, number> = {};
    while (quiet < 2) {
      pending = await pendingWork(this.databases());
      quiet = Object.values(pending).every((n) => n === 0) ? quiet + 1 : 0;
      if (Date.now() - started > timeoutMs) return { drained: false, ms: Date.now() - started, pending };
      await sleep(quiet > 0 ? 300 : 100);
    }
    return { drained: true, ms: Date.now() - started, pending };
  }

  /** What the running services answer about the run: terminals' unsent taps, and the issuer's reconciliation of every day. */
  async apiChecks(): Promise<{ reports: GetReconciliationReportResponse[]; violations: string[] }> {
    const violations: string[] = [];
    for (const [i, client] of this.clients.terminals.entries()) {
      const s = await ask(() => callUnary(client, client.getTerminalStatus, { unsentTapsLimit: 1 }));
      if (s.unsentTapCount !== '0') violations.push(`terminal ${this.terminalIds[i]} reports ${s.unsentTapCount} unsent taps`);
    }
    const db = this.databases().issuer;
    const [span] = await db('taps').select(db.raw('MIN(tapped_at) AS first'), db.raw('MAX(tapped_at) AS last'));
    const reports: GetReconciliationReportResponse[] = [];
    if (span.first === null) return { reports, violations };
    // The issuer's service day may start hours off UTC midnight: ask for every UTC date around the run (days do not overlap).
    const day = 86_400_000;
    const issuer = this.clients.issuer;
    for (let t = Number(span.first) - (Number(span.first) % day) - day; t <= Number(span.last) + day; t += day) {
      let pageToken = '';
      do {
        const r = await ask(() => callUnary(issuer, issuer.getReconciliationReport, { serviceDay: new Date(t).toISOString().slice(0, 10), pageSize: 1000, pageToken }));
        if (!pageToken) reports.push(r);
        for (const m of r.mismatches.slice(0, 20)) violations.push(`reconciliation mismatch: ${m.settlementId} ${m.tapId} ${m.reason}`);
        if (r.mismatches.length > 20) violations.push(`reconciliation: ... and ${r.mismatches.length - 20} more mismatches on ${r.serviceDay}`);
        pageToken = r.nextPageToken;
      } while (pageToken);
    }
    return { reports, violations };
  }

  /**
   * Invariant 5 at the gate: every card the issuer lists is declined
   * DENY_LISTED by every terminal (call after drain(), which waits for the
   * terminals to sync). A declined listed card is not read, so this leaves
   * no trace but the terminals' logs.
   */
  async denyListProbe(cards: CardImage[]): Promise<string[]> {
    const db = this.databases().issuer;
    if (!(await db.schema.hasTable('deny_list_entries'))) return [];
    const listed = new Set<string>((await db('deny_list_entries').distinct('card_id')).map((r: { card_id: string }) => r.card_id));
    const violations: string[] = [];
    const probe = new DriverRecord();
    for (const [c, card] of cards.entries()) {
      if (!listed.has(card.cardId)) continue;
      for (let t = 0; t < this.terminalIds.length; t++) {
        const before = probe.declined.DECLINE_REASON_DENY_LISTED ?? 0;
        const deadline = Date.now() + 30_000;
        let failed = await this.presentOnce([...cards], c, t, probe);
        for (; failed === status.UNAVAILABLE && Date.now() < deadline; failed = await this.presentOnce([...cards], c, t, probe)) await sleep(100);
        if (failed !== undefined || (probe.declined.DECLINE_REASON_DENY_LISTED ?? 0) !== before + 1) {
          violations.push(`deny-listed card ${card.cardId} not declined DENY_LISTED at terminal ${this.terminalIds[t]}`);
        }
      }
    }
    return violations;
  }

  /** SIGTERM to every running server; each must exit 0. */
  async stopAll(): Promise<string[]> {
    const violations: string[] = [];
    for (const s of this.services.values()) {
      if (!s.running) continue;
      const exit = await s.signal('SIGTERM');
      if (exit.code !== 0) violations.push(`${s.spec.name} exited ${exit.code ?? exit.signal} on SIGTERM`);
    }
    return violations;
  }

  /** The invariants of docs/design.md from the databases (see invariants.ts), plus any server that died on its own. */
  async check(record: DriverRecord, reports: GetReconciliationReportResponse[]): Promise<{ violations: string[]; figures: InvariantFigures }> {
    const dbs = this.databases();
    const checked = await checkInvariants({ ...dbs, accepted: record.accepted, issuerId: ISSUER_ID, currency: CURRENCY, reports });
    const violations = [...record.errors.map((e) => `terminal answered with an error: ${e}`), ...checked.violations];
    for (const c of this.crashed) violations.push(`${c.name} exited on its own (${c.signal ?? `exit ${c.code}`}); see its log`);
    return { violations, figures: checked.figures };
  }

  /** Stops whatever still runs (SIGKILL), closes clients, proxies and databases; removes the directory unless kept. */
  async close(keepDir: boolean): Promise<void> {
    for (const c of [this.clients.authorizer, this.clients.issuer, ...this.clients.terminals]) c.close();
    for (const s of this.services.values()) if (s.running) await s.signal('SIGKILL');
    for (const p of Object.values(this.proxies)) await p.close();
    if (this.dbs) for (const db of [this.dbs.issuer, this.dbs.authorizer, ...this.dbs.terminals.values()]) await db.destroy();
    if (!keepDir) removeDir(this.dir);
  }
}
