// The audit trail of ops calls: who (the certificate identity), what (the RPC
// and the ids it acted on), when, why (the operator's reason, sent as call
// metadata) and how it ended. Each server keeps its own trail table. The row
// is written before the handler runs, so an ops action the trail cannot record
// does not happen; its outcome is filled in when the call ends.
import type { Metadata } from '@grpc/grpc-js';
import type { Knex } from 'knex';
import type { Db } from './db.js';
import { ApiError } from './errors.js';
import { peerIdentity } from './tls.js';
import { pageSize, Violations } from './validate.js';
import type { AuditEntry } from '../gen/tapcredit/type/v1/audit.js';

export const AUDIT_TABLE = 'audit_trail';
export const AUDIT_REASON_METADATA = 'x-tapcredit-audit-reason';
const MAX_REASON = 200;
const MAX_TARGET = 500;

/** The table, for a service's migration. */
export async function createAuditTable(db: Knex): Promise<void> {
  await db.schema.createTable(AUDIT_TABLE, (t) => {
    t.increments('entry_id').primary();
    t.bigInteger('at').notNullable();
    t.string('actor', 200).notNullable();
    t.string('rpc', 100).notNullable();
    t.string('target', MAX_TARGET).notNullable();
    t.string('reason', MAX_REASON).notNullable();
    t.string('outcome', 64).notNullable();
  });
}

/** The ids a request names (top-level string fields ending in Id, and a state or reason enum): never a rider's details. */
function targetOf(request: unknown): string {
  if (!request || typeof request !== 'object') return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(request as Record<string, unknown>)) {
    if ((key.endsWith('Id') && typeof value === 'string' && value !== '') || ((key === 'state' || key === 'reason') && typeof value === 'number')) {
      const field = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      parts.push(`${field}=${String(value).slice(0, 64)}`);
    }
  }
  return parts.join(' ').slice(0, MAX_TARGET);
}

type Call = { metadata: Metadata; getAuthContext(): any };
type Handler = (request: any, call: any) => Promise<any>;

/**
 * Wraps the handlers of the named RPCs (method names as in the generated
 * server, e.g. 'reportCardLost') so that calls by ops are audited.
 */
export function audited<H extends Record<string, any>>(db: Db, service: string, rpcs: readonly (keyof H & string)[], handlers: H): H {
  const wrapped: Record<string, Handler> = { ...handlers };
  for (const rpc of rpcs) {
    const inner = handlers[rpc] as Handler;
    const name = `${service}.${rpc[0].toUpperCase()}${rpc.slice(1)}`;
    wrapped[rpc] = async (request: unknown, call: Call) => {
      const peer = peerIdentity(call);
      if (peer?.role !== 'ops') return inner(request, call);
      const [why] = call.metadata.get(AUDIT_REASON_METADATA);
      const [row] = await db(AUDIT_TABLE).insert(
        {
          at: Date.now(),
          actor: peer.uri,
          rpc: name,
          target: targetOf(request),
          reason: typeof why === 'string' ? why.slice(0, MAX_REASON) : '',
          outcome: 'PENDING',
        },
        ['entry_id'],
      );
      const entryId = typeof row === 'object' ? row.entry_id : row;
      const finish = (outcome: string) => db(AUDIT_TABLE).where({ entry_id: entryId }).update({ outcome });
      try {
        const response = await inner(request, call);
        await finish('OK');
        return response;
      } catch (err) {
        await finish(err instanceof ApiError ? err.reason : 'INTERNAL').catch(() => {});
        throw err;
      }
    };
  }
  return wrapped as H;
}

/** A page of the trail, newest first; the page token is the last entry id seen. */
export async function listAuditEntries(db: Db, req: { pageSize: number; pageToken: string }): Promise<{ entries: AuditEntry[]; nextPageToken: string }> {
  const v = new Violations();
  const size = pageSize(v, req.pageSize, 50, 500);
  const before = req.pageToken === '' ? undefined : Number(req.pageToken);
  if (before !== undefined && !(Number.isSafeInteger(before) && before > 0)) v.add('page_token', 'must be a next_page_token of ListAuditEntries');
  v.throwIfAny();
  let q = db(AUDIT_TABLE).orderBy('entry_id', 'desc').limit(size + 1);
  if (before !== undefined) q = q.where('entry_id', '<', before);
  const rows = await q;
  const page = rows.slice(0, size);
  return {
    entries: page.map((r: any) => ({
      entryId: String(r.entry_id),
      at: new Date(Number(r.at)),
      actor: r.actor,
      rpc: r.rpc,
      target: r.target,
      reason: r.reason,
      outcome: r.outcome,
    })),
    nextPageToken: rows.length > size ? String(page[page.length - 1].entry_id) : '',
  };
}
