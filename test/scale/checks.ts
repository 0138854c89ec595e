// The invariants of docs/design.md after a run with replicas, from the services'
// databases (test/faults/invariants.ts does the checking) and the issuer's
// reconciliation report of every service day of the run.
import type { Db } from '../../common/db.js';
import { callUnary } from '../../common/rpc.js';
import type { GetReconciliationReportResponse, IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { checkInvariants, pendingWork, type AcceptedTap, type InvariantFigures } from '../faults/invariants.js';

export type { AcceptedTap };

export interface RunDatabases {
  issuer: Db;
  authorizer: Db;
  /** Terminal id -> its database. */
  terminals: Map<string, Db>;
}

/** The issuer's reconciliation report of every service day the taps of the run fall on. */
export async function reconciliationReports(issuer: IssuerServiceClient, db: Db): Promise<GetReconciliationReportResponse[]> {
  const [span] = await db('taps').select(db.raw('CAST(MIN(tapped_at) AS TEXT) AS first'), db.raw('CAST(MAX(tapped_at) AS TEXT) AS last'));
  const reports: GetReconciliationReportResponse[] = [];
  if (span.first === null) return reports;
  // The service day may start hours off UTC midnight: ask for every UTC date around the run (days do not overlap).
  const day = 86_400_000;
  for (let t = Number(span.first) - (Number(span.first) % day) - day; t <= Number(span.last) + day; t += day) {
    let pageToken = '';
    let first: GetReconciliationReportResponse | undefined;
    do {
      const r = await callUnary(issuer, issuer.getReconciliationReport, { serviceDay: new Date(t).toISOString().slice(0, 10), pageSize: 1000, pageToken });
      first ??= r;
      if (first !== r) first.mismatches.push(...r.mismatches);
      pageToken = r.nextPageToken;
    } while (pageToken);
    reports.push(first!);
  }
  return reports;
}

/** Zero everywhere once every outbox is drained. */
export const outstanding = (dbs: RunDatabases) => pendingWork(dbs);

export async function isDrained(dbs: RunDatabases): Promise<boolean> {
  return Object.values(await pendingWork(dbs)).every((n) => n === 0);
}

/** Every violation of the invariants (empty when all hold), and the run's figures. */
export async function invariantViolations(
  dbs: RunDatabases,
  accepted: AcceptedTap[],
  issuer: IssuerServiceClient,
  ids: { issuerId: string; currency: string },
): Promise<{ violations: string[]; figures: InvariantFigures }> {
  const reports = await reconciliationReports(issuer, dbs.issuer);
  const checked = await checkInvariants({ ...dbs, accepted, reports, ...ids });
  const mismatches = reports.flatMap((r) => r.mismatches.map((m) => `reconciliation mismatch: ${m.settlementId} ${m.tapId} ${m.reason}`));
  return { violations: [...checked.violations, ...mismatches], figures: checked.figures };
}
