// IssuerService over gRPC: each RPC hands the request to its domain module;
// errors are mapped to gRPC status in one place (common/server.ts).
import type { Logger } from '../common/log.js';
import { unaryHandlers } from '../common/server.js';
import { TapReportStatus, type IssuerServiceServer } from '../gen/tapcredit/issuer/v1/issuer.js';
import { getCard, listCardTaps } from './cards.js';
import type { IssuerContext } from './context.js';
import { enrollCard } from './enrollment.js';
import { settle } from './settlement.js';
import { reportTaps } from './taps.js';

export const ERROR_DOMAIN = 'issuer.tapcredit';

/** onTapsStored wakes the debit worker when a report queued new debits. */
export function issuerHandlers(ctx: IssuerContext, log: Logger, onTapsStored: () => void): IssuerServiceServer {
  return unaryHandlers<IssuerServiceServer>(ERROR_DOMAIN, log, {
    enrollCard: (req) => enrollCard(ctx, req),
    tapReport: async (req) => {
      const response = await reportTaps(ctx, req);
      if (response.results.some((r) => r.status === TapReportStatus.TAP_REPORT_STATUS_STORED)) onTapsStored();
      return response;
    },
    settle: (req) => settle(ctx, req),
    getCard: (req) => getCard(ctx, req),
    listCardTaps: (req) => listCardTaps(ctx, req),
  });
}
