// IssuerService over gRPC: each RPC hands the request to its domain module;
// errors are mapped to gRPC status in one place (common/server.ts).
import type { Metadata, ServerWritableStream } from '@grpc/grpc-js';
import { audited, listAuditEntries } from '../common/audit.js';
import { riderOf } from '../common/authz.js';
import { toServiceError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { malformedRequestError, unaryHandlers, type AsyncHandlers } from '../common/server.js';
import { encodedWriter, resetServerStream } from '../common/server-stream.js';
import {
  TapReportStatus,
  type IssuerServiceServer,
  type WatchDenyListRequest,
  type WatchDenyListResponse,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import { reportCardLost, unenrollCard } from './card-lifecycle.js';
import { assertRidersCard, getCard, listCardTaps } from './cards.js';
import type { IssuerContext } from './context.js';
import { retryDebts } from './debts.js';
import { addToDenyList, listDenyListChanges, removeFromDenyList, watchFromVersion } from './deny-list.js';
import type { DenyListFeed } from './deny-list-feed.js';
import { enrollCard } from './enrollment.js';
import { reconciliationReport } from './reconciliation.js';
import { settle } from './settlement.js';
import { logReportedTaps, logSettledTaps } from './tap-trail.js';
import { reportTaps } from './taps.js';

export const ERROR_DOMAIN = 'issuer.tapcredit';

/**
 * WatchDenyList, the one server-streaming RPC: the feed (deny-list-feed.ts)
 * drives the stream; errors end it with the same status mapping as the
 * unary RPCs.
 */
/** Bytes a watch stream may have waiting for its client before the feed stops writing to it. */
const WATCH_HIGH_WATER_BYTES = 64 * 1024;

function watchDenyListHandler(log: Logger, feed: DenyListFeed) {
  return (call: ServerWritableStream<WatchDenyListRequest, WatchDenyListResponse>) => {
    const fail = (err: unknown) => {
      const serviceError = toServiceError(err, ERROR_DOMAIN);
      if (serviceError.code === 13) log.error({ rpc: 'watchDenyList', err }, 'rpc failed');
      else log.info({ rpc: 'watchDenyList', code: serviceError.code, reason: (err as { reason?: string })?.reason }, 'rpc refused');
      if (!call.cancelled && !call.writableEnded) call.emit('error', serviceError);
    };
    const malformed = malformedRequestError(call.request);
    if (malformed) {
      fail(malformed);
      return;
    }
    let from: bigint;
    try {
      from = watchFromVersion(call.request);
    } catch (err) {
      fail(err);
      return;
    }
    log.debug({ rpc: 'watchDenyList', terminalId: call.request.terminalId, from: String(from) }, 'deny-list watch opened');
    const writer = encodedWriter(call, WATCH_HIGH_WATER_BYTES);
    const watch = feed.watch(
      {
        terminalId: call.request.terminalId,
        write: writer.write,
        onDrain: writer.onDrain,
        end: () => {
          if (!call.cancelled && !call.writableEnded) call.end();
        },
        drop: () => resetServerStream(call, 'deny-list watcher too slow'),
        fail,
      },
      from,
    );
    call.once('cancelled', watch.cancel);
    call.once('close', watch.cancel);
  };
}

/**
 * onTapsStored wakes the debit worker when a report queued new debits;
 * feed wakes the WatchDenyList streams.
 */
export function issuerHandlers(ctx: IssuerContext, log: Logger, onTapsStored: () => void, feed: DenyListFeed): IssuerServiceServer {
  // A rider's call (phone app with a token) sees only the rider's own cards.
  const forRider = async (call: { metadata: Metadata }, cardId: string) => {
    const rider = riderOf(call);
    if (rider !== undefined) await assertRidersCard(ctx.db, cardId, rider);
  };
  const unary: Omit<AsyncHandlers<IssuerServiceServer>, 'watchDenyList'> = {
    enrollCard: (req) => enrollCard(ctx, req),
    tapReport: async (req) => {
      const response = await reportTaps(ctx, req);
      logReportedTaps(log, req, response);
      if (response.results.some((r) => r.status === TapReportStatus.TAP_REPORT_STATUS_STORED)) onTapsStored();
      return response;
    },
    settle: async (req) => {
      const response = await settle(ctx, req);
      await logSettledTaps(ctx.db, log, req, response);
      return response;
    },
    getCard: async (req, call) => {
      await forRider(call, req.cardId);
      return getCard(ctx, req);
    },
    listCardTaps: async (req, call) => {
      await forRider(call, req.cardId);
      return listCardTaps(ctx, req);
    },
    getReconciliationReport: (req) =>
      reconciliationReport(ctx.db, req, {
        currencyCode: ctx.currencyCode,
        serviceDay: ctx.fareCap,
      }),
    listDenyListChanges: (req) => listDenyListChanges(ctx, req),
    addToDenyList: (req) => addToDenyList(ctx, req),
    removeFromDenyList: (req) => removeFromDenyList(ctx, req),
    unenrollCard: async (req, call) => {
      await forRider(call, req.cardId);
      return unenrollCard(ctx, req);
    },
    reportCardLost: async (req, call) => {
      await forRider(call, req.cardId);
      return reportCardLost(ctx, req);
    },
    retryDebts: async (req, call) => {
      await forRider(call, req.cardId);
      return retryDebts(ctx, req);
    },
    listAuditEntries: (req) => listAuditEntries(ctx.db, req),
  };
  // Every ops action, and every ops read of a rider's card, goes to the audit trail.
  const withAudit = audited(ctx.db, 'IssuerService', ['enrollCard', 'unenrollCard', 'reportCardLost', 'retryDebts', 'getCard', 'listCardTaps', 'addToDenyList', 'removeFromDenyList'], unary);
  return {
    ...unaryHandlers<IssuerServiceServer>(ERROR_DOMAIN, log, withAudit as AsyncHandlers<IssuerServiceServer>),
    watchDenyList: watchDenyListHandler(log, feed),
  };
}
