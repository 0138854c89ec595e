// The invariants of docs/design.md, checked by reading the three services'
// databases after a run has gone quiet:
// 1. no accepted tap is lost (driver -> terminal -> issuer);
// 2. no tap is debited twice;
// 3. the ledger balances;
// 4. settled = debited, item by item;
// 5. every terminal holds the issuer's deny list once synced;
// 6. for each card, the rides charged (taps debited or owed, repeats not
//    counted) equal the ACCEPT answers the readers saw;
// and every tap is in a final state. Each check lists what it found wrong.
import knexFactory from 'knex';
import { ledgerAccountId, ledgerViolations } from '../../authorizer/ledger.js';
import { asText, toNumber, type Db } from '../../common/db.js';
import type { GetReconciliationReportResponse } from '../../gen/tapcredit/issuer/v1/issuer.js';

/** Tap states in which a tap stays once the system is quiet. */
export const FINAL_TAP_STATES = new Set(['SETTLED', 'DECLINED', 'UNCOLLECTABLE', 'REJECTED', 'CAPPED', 'REPEATED']);
/** States of a tap that is a charged ride: debited, or owed as a debt. */
const CHARGED_STATES = new Set(['DEDUCTED', 'SETTLED', 'DECLINED', 'UNCOLLECTABLE']);
/** REJECTED reasons that can only come from a fault of the system (a tap corrupted or a binding lost). */
const BUG_REJECT_REASONS = new Set(['CARD_AUTHENTICATION_FAILED', 'CARD_NOT_ENROLLED']);
const MAX_LISTED = 20;

/** Opens a service's SQLite file for reading while (or after) the service runs. */
export const openSqlite = (file: string): Db =>
  knexFactory({ client: 'sqlite3', connection: { filename: file }, useNullAsDefault: true, pool: { min: 1, max: 1 } });

export interface AcceptedTap {
  tapId: string;
  cardId: string;
  terminalId: string;
  /** Set when the ACCEPT was for a repeat of a tap whose ACCEPT the reader never saw. */
  repeatOf?: string;
}

export interface InvariantInput {
  issuer: Db;
  authorizer: Db;
  /** Terminal id -> its database. */
  terminals: Map<string, Db>;
  /** Every ACCEPT the driver received. */
  accepted: AcceptedTap[];
  issuerId: string;
  currency: string;
  /** The issuer's reconciliation report of every service day of the run. */
  reports: GetReconciliationReportResponse[];
}

export interface InvariantFigures {
  /** Taps at the issuer by state. */
  issuerTaps: Record<string, number>;
  /** REJECTED taps by reason. */
  rejected: Record<string, number>;
  debitedCount: number;
  debited: bigint;
  settled: bigint;
  /** Invariant 6: rides charged (taps debited or owed) and ACCEPTs the readers saw, over all cards. */
  ridesCharged: number;
  acceptsSeen: number;
  /** ACCEPTs of repeats (gates opened again for a torn tap, no fare). */
  repeatsAccepted: number;
  /** Cards checked, and those whose charged rides equal the ACCEPTs seen. */
  cards: number;
  cardsMatching: number;
}

/** Collects violations, listing at most MAX_LISTED per check with the count of the rest. */
class Findings {
  readonly violations: string[] = [];
  private readonly counts = new Map<string, number>();

  add(check: string, detail: string): void {
    const n = (this.counts.get(check) ?? 0) + 1;
    this.counts.set(check, n);
    if (n <= MAX_LISTED) this.violations.push(`${check}: ${detail}`);
  }

  finish(): string[] {
    for (const [check, n] of this.counts) if (n > MAX_LISTED) this.violations.push(`${check}: ... and ${n - MAX_LISTED} more`);
    return this.violations;
  }
}

interface IssuerTapRow {
  tap_id: string;
  card_id: string;
  state: string;
  decline_reason: string | null;
  deduction_id: string | null;
  settlement_id: string | null;
  charged_minor: string | null;
}

interface DeductionRow {
  key: string;
  request_id: string;
  status: string;
  deduction_id: string | null;
  amount: string;
  account_id: string;
  settlement_id: string | null;
  settlement_status: string | null;
}

export async function checkInvariants(input: InvariantInput): Promise<{ violations: string[]; figures: InvariantFigures }> {
  const f = new Findings();
  const { issuer, authorizer } = input;

  // --- what each service holds ---
  const issuerTaps = new Map<string, IssuerTapRow>();
  for (const row of await issuer('taps').select('tap_id', 'card_id', 'state', 'decline_reason', 'deduction_id', 'settlement_id', asText(issuer, 'charged_minor'))) {
    issuerTaps.set(row.tap_id, row);
  }
  const terminalTaps = new Map<string, { terminalId: string; cardId: string; acked: boolean }>();
  for (const [terminalId, db] of input.terminals) {
    for (const row of await db('taps').select('tap_id', 'card_id', asText(db, 'acked_at'))) {
      terminalTaps.set(row.tap_id, { terminalId, cardId: row.card_id, acked: row.acked_at !== null });
    }
  }
  // A debt retried under a new request id names its tap in tap_id.
  const hasTapId = await authorizer.schema.hasColumn('deductions', 'tap_id');
  const deductions: DeductionRow[] = (
    await authorizer('deductions').select(
      'request_id',
      ...(hasTapId ? ['tap_id'] : []),
      'status',
      'deduction_id',
      'account_id',
      'settlement_id',
      'settlement_status',
      asText(authorizer, 'amount'),
    )
  ).map((r: DeductionRow & { tap_id?: string | null }) => ({ ...r, key: r.tap_id || r.request_id }));
  const settlementStates = new Map<string, string>((await authorizer('settlements').select('settlement_id', 'state')).map((r) => [r.settlement_id, r.state]));

  // --- 1. no accepted tap is lost ---
  for (const a of input.accepted) {
    const atTerminal = terminalTaps.get(a.tapId);
    if (!atTerminal) f.add('accepted tap missing at its terminal', `${a.tapId} (card ${a.cardId})`);
    else if (atTerminal.terminalId !== a.terminalId || atTerminal.cardId !== a.cardId) f.add('accepted tap differs at its terminal', a.tapId);
    const atIssuer = issuerTaps.get(a.tapId);
    if (!atIssuer) f.add('accepted tap never reached the issuer', `${a.tapId} (card ${a.cardId})`);
    else if (atIssuer.card_id !== a.cardId) f.add('accepted tap has another card at the issuer', a.tapId);
  }
  for (const [tapId, t] of terminalTaps) {
    if (!issuerTaps.has(tapId)) f.add('terminal tap never reached the issuer', `${tapId} (terminal ${t.terminalId})`);
    if (!t.acked) f.add('terminal tap still unsent', tapId);
  }
  for (const tapId of issuerTaps.keys()) if (!terminalTaps.has(tapId)) f.add('issuer holds a tap no terminal recorded', tapId);

  // --- every tap in a final state ---
  const byState: Record<string, number> = {};
  const rejected: Record<string, number> = {};
  for (const t of issuerTaps.values()) {
    byState[t.state] = (byState[t.state] ?? 0) + 1;
    if (!FINAL_TAP_STATES.has(t.state)) f.add('tap not in a final state', `${t.tap_id} is ${t.state}`);
    if (t.state === 'REJECTED') {
      const reason = t.decline_reason ?? '';
      rejected[reason] = (rejected[reason] ?? 0) + 1;
      if (BUG_REJECT_REASONS.has(reason)) f.add('tap rejected by the issuer', `${t.tap_id}: ${reason}`);
    }
  }

  // --- 6. as the rider sees it: one charge per ACCEPT, per card ---
  const charged = new Map<string, number>();
  const seen = new Map<string, number>();
  for (const t of issuerTaps.values()) if (CHARGED_STATES.has(t.state)) charged.set(t.card_id, (charged.get(t.card_id) ?? 0) + 1);
  for (const a of input.accepted) seen.set(a.cardId, (seen.get(a.cardId) ?? 0) + 1);
  const riders = new Set([...charged.keys(), ...seen.keys()]);
  let cardsMatching = 0;
  for (const cardId of riders) {
    const c = charged.get(cardId) ?? 0;
    const s = seen.get(cardId) ?? 0;
    if (c === s) cardsMatching++;
    else f.add('rides charged differ from the ACCEPTs the readers saw', `card ${cardId}: ${c} charged, ${s} ACCEPTs seen`);
  }

  // --- 2. no tap debited twice; the issuer and the authorizer agree on every debit ---
  const debitsByTap = new Map<string, DeductionRow[]>();
  for (const d of deductions) {
    if (d.status !== 'DEBITED') continue;
    const list = debitsByTap.get(d.key) ?? [];
    list.push(d);
    debitsByTap.set(d.key, list);
  }
  for (const [tapId, debits] of debitsByTap) {
    if (debits.length > 1) f.add('tap debited more than once', `${tapId}: ${debits.map((d) => d.deduction_id).join(', ')}`);
    const tap = issuerTaps.get(tapId);
    if (!tap) f.add('debit of a tap the issuer does not hold', tapId);
    else if (tap.state !== 'SETTLED' && tap.state !== 'DEDUCTED') f.add('debited tap not DEDUCTED/SETTLED at the issuer', `${tapId} is ${tap.state}`);
    else if (tap.deduction_id !== debits[0].deduction_id) f.add('issuer holds another deduction id', `${tapId}: ${tap.deduction_id} vs ${debits[0].deduction_id}`);
    else if (tap.charged_minor === null || BigInt(tap.charged_minor) !== BigInt(debits[0].amount)) {
      f.add('issuer holds another charged amount', `${tapId}: ${tap.charged_minor} vs ${debits[0].amount}`);
    }
  }
  for (const t of issuerTaps.values()) {
    if ((t.state === 'DEDUCTED' || t.state === 'SETTLED') && !debitsByTap.has(t.tap_id)) f.add('tap DEDUCTED/SETTLED without a debit at the authorizer', t.tap_id);
  }
  const fareTransfers = await authorizer('transfers').where({ kind: 'FARE' }).select('transfer_id', 'reference', asText(authorizer, 'amount'));
  const debitIds = new Map(deductions.filter((d) => d.status === 'DEBITED').map((d) => [d.deduction_id!, d]));
  for (const t of fareTransfers) {
    const d = debitIds.get(t.transfer_id);
    if (!d) f.add('FARE transfer without a DEBITED deduction', t.transfer_id);
    else if (BigInt(t.amount) !== BigInt(d.amount)) f.add('FARE transfer amount differs from its deduction', t.transfer_id);
  }
  if (fareTransfers.length !== debitIds.size) f.add('FARE transfers and debits differ in number', `${fareTransfers.length} vs ${debitIds.size}`);

  // --- 3. the ledger balances ---
  for (const problem of await ledgerViolations(authorizer)) f.add('ledger', problem);
  const balanceOf = async (id: string) => {
    const row = await authorizer('ledger_accounts').where({ ledger_account_id: id }).first(asText(authorizer, 'balance'));
    return row ? BigInt(row.balance) : 0n;
  };
  const debitedByAccount = new Map<string, bigint>();
  for (const d of debitIds.values()) debitedByAccount.set(d.account_id, (debitedByAccount.get(d.account_id) ?? 0n) + BigInt(d.amount));
  const topUps = await authorizer('top_ups as u').join('transfers as t', 't.transfer_id', 'u.transfer_id').select('u.account_id', asText(authorizer, 't.amount', 'amount'));
  const toppedUp = new Map<string, bigint>();
  for (const u of topUps) toppedUp.set(u.account_id, (toppedUp.get(u.account_id) ?? 0n) + BigInt(u.amount));
  for (const a of await authorizer('accounts').select('account_id', 'ledger_account_id')) {
    const expected = (toppedUp.get(a.account_id) ?? 0n) - (debitedByAccount.get(a.account_id) ?? 0n);
    const balance = await balanceOf(a.ledger_account_id);
    if (balance !== expected) f.add('rider balance is not top-ups minus debits', `${a.account_id}: ${balance} vs ${expected}`);
  }

  // --- 4. settled = debited, item by item ---
  const items = new Map<string, { settlement_id: string; deduction_id: string; amount_minor: string; status: string; reason: string | null }[]>();
  for (const i of await issuer('settlement_items').select('settlement_id', 'tap_id', 'deduction_id', 'status', 'reason', asText(issuer, 'amount_minor'))) {
    const list = items.get(i.tap_id) ?? [];
    list.push(i);
    items.set(i.tap_id, list);
    if (i.status !== 'MATCHED') f.add('settlement item mismatched at the issuer', `${i.settlement_id} ${i.tap_id}: ${i.reason}`);
  }
  let debited = 0n;
  for (const d of debitIds.values()) {
    debited += BigInt(d.amount);
    if (!d.settlement_id) f.add('debit never put in a settlement', d.key);
    else if (settlementStates.get(d.settlement_id) !== 'ACKNOWLEDGED') f.add('debit in a settlement not acknowledged', `${d.key} in ${d.settlement_id}`);
    else if (d.settlement_status !== 'MATCHED') f.add('debit not matched by the issuer', `${d.key}: ${d.settlement_status}`);
    const tap = issuerTaps.get(d.key);
    const matched = (items.get(d.key) ?? []).filter((i) => i.status === 'MATCHED');
    if (matched.length !== 1) f.add('debit not settled exactly once at the issuer', `${d.key}: ${matched.length} matched items`);
    else if (matched[0].deduction_id !== d.deduction_id || BigInt(matched[0].amount_minor) !== BigInt(d.amount)) f.add('settled item differs from its debit', d.key);
    else if (tap && (tap.state !== 'SETTLED' || tap.settlement_id !== matched[0].settlement_id)) f.add('settled tap not SETTLED by its settlement', `${d.key} is ${tap.state}`);
  }
  let settled = 0n;
  for (const t of issuerTaps.values()) if (t.state === 'SETTLED') settled += BigInt(t.charged_minor ?? 0);
  if (settled !== debited) f.add('money settled differs from money debited', `${settled} vs ${debited}`);
  const paid = await balanceOf(ledgerAccountId.issuerPaid(input.issuerId, input.currency));
  const payable = await balanceOf(ledgerAccountId.issuerPayable(input.issuerId, input.currency));
  if (paid !== debited) f.add('ledger paid to the issuer differs from money debited', `${paid} vs ${debited}`);
  if (payable !== 0n) f.add('ledger still owes the issuer', `${payable}`);
  for (const [id, state] of settlementStates) if (state !== 'ACKNOWLEDGED') f.add('settlement not acknowledged', id);

  // --- 5. every terminal holds the issuer's deny list (once synced: the drain waited for it) ---
  if (await issuer.schema.hasTable('deny_list_entries')) {
    const listed = new Set<string>((await issuer('deny_list_entries').distinct('card_id')).map((r: { card_id: string }) => r.card_id));
    for (const [terminalId, db] of input.terminals) {
      const held = new Set<string>((await db('deny_list').select('card_id')).map((r: { card_id: string }) => r.card_id));
      for (const card of listed) if (!held.has(card)) f.add('deny-listed card missing at a terminal', `${card} at ${terminalId}`);
      for (const card of held) if (!listed.has(card)) f.add('terminal denies a card the issuer does not list', `${card} at ${terminalId}`);
    }
  }

  // --- the issuer's reconciliation report says the same ---
  const sum = (pick: (r: GetReconciliationReportResponse) => string | undefined) => input.reports.reduce((s, r) => s + BigInt(pick(r) ?? 0), 0n);
  if (sum((r) => r.tapCount) !== BigInt(issuerTaps.size)) f.add('reconciliation report', `counts ${sum((r) => r.tapCount)} taps, the issuer holds ${issuerTaps.size}`);
  if (sum((r) => r.debited?.minorUnits) !== debited) f.add('reconciliation report', `debited ${sum((r) => r.debited?.minorUnits)} vs ${debited}`);
  if (sum((r) => r.settled?.minorUnits) !== settled) f.add('reconciliation report', `settled ${sum((r) => r.settled?.minorUnits)} vs ${settled}`);
  if (sum((r) => r.unsettled?.minorUnits) !== 0n) f.add('reconciliation report', `unsettled ${sum((r) => r.unsettled?.minorUnits)}`);
  if (sum((r) => r.mismatchCount) !== 0n) f.add('reconciliation report', `${sum((r) => r.mismatchCount)} mismatches`);

  return {
    violations: f.finish(),
    figures: {
      issuerTaps: byState,
      rejected,
      debitedCount: debitIds.size,
      debited,
      settled,
      ridesCharged: [...charged.values()].reduce((a, b) => a + b, 0),
      acceptsSeen: input.accepted.length,
      repeatsAccepted: input.accepted.filter((a) => a.repeatOf !== undefined).length,
      cards: riders.size,
      cardsMatching,
    },
  };
}

/** What is still in flight: zero everywhere means the outboxes are drained. */
export async function pendingWork(input: Pick<InvariantInput, 'issuer' | 'authorizer' | 'terminals'>): Promise<Record<string, number>> {
  const count = async (q: Promise<{ n: unknown }[]>) => toNumber((await q)[0].n);
  let unsent = 0;
  for (const db of input.terminals.values()) unsent += await count(db('taps').whereNull('acked_at').count({ n: '*' }));
  // Terminals whose deny list is behind the issuer's (when the schemas have one).
  let behind = 0;
  if (await input.issuer.schema.hasTable('deny_list_head')) {
    const head = BigInt((await input.issuer('deny_list_head').where({ id: 1 }).first(asText(input.issuer, 'version')))?.version ?? 0);
    for (const db of input.terminals.values()) {
      const held = BigInt((await db('terminal_meta').where({ id: 1 }).first(asText(db, 'deny_list_version')))?.deny_list_version ?? 0);
      if (held < head) behind++;
    }
  }
  // Debt retries (debit_attempts, when the schema has them) stored PENDING and not answered yet.
  const debtRetries = (await input.issuer.schema.hasTable('debit_attempts'))
    ? await count(input.issuer('debit_attempts').where({ state: 'PENDING' }).count({ n: '*' }))
    : 0;
  return {
    terminalUnsent: unsent,
    terminalsBehindDenyList: behind,
    issuerDebtRetriesInFlight: debtRetries,
    issuerUndebited: await count(input.issuer('taps').whereIn('state', ['RECEIVED', 'DEDUCTING']).count({ n: '*' })),
    issuerUnsettled: await count(input.issuer('taps').where({ state: 'DEDUCTED' }).count({ n: '*' })),
    authorizerUnsettled: await count(input.authorizer('deductions').where({ status: 'DEBITED' }).whereNull('settlement_id').count({ n: '*' })),
    authorizerPendingSettlements: await count(input.authorizer('settlements').where({ state: 'PENDING' }).count({ n: '*' })),
  };
}
