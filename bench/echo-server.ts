// The transport baseline: a bare grpc-js server speaking IssuerService.TapReport
// with the same generated (de)serializers and the same transport (mTLS with
// the issuer's certificate, or plaintext with --insecure), answering every
// tap STORED without looking at it: no validation, authorization, logging or
// storage. Run as its own process, like the issuer:
//   node --import tsx bench/echo-server.ts --port 50099 [--insecure]
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { booleanFlag, intSetting } from '../common/config.js';
import type { ReadyMessage } from '../common/process.js';
import { serverCredentials, loadTls, tlsFilesFromSettings } from '../common/tls.js';
import { IssuerServiceService, TapReportStatus, type TapReportRequest, type TapReportResponse } from '../gen/tapcredit/issuer/v1/issuer.js';

const port = intSetting('port', 'ECHO_PORT', 0);
const credentials = booleanFlag('insecure') ? ServerCredentials.createInsecure() : serverCredentials(loadTls(tlsFilesFromSettings('issuer')));

const server = new Server();
server.addService(IssuerServiceService, {
  tapReport(call: ServerUnaryCall<TapReportRequest, TapReportResponse>, callback: sendUnaryData<TapReportResponse>) {
    callback(null, { results: call.request.taps.map((t) => ({ tapId: t.tapId, status: TapReportStatus.TAP_REPORT_STATUS_STORED, reason: '' })) });
  },
});
server.bindAsync(`127.0.0.1:${port}`, credentials, (err, bound) => {
  if (err) throw err;
  console.log(JSON.stringify({ msg: 'echo server listening', port: bound }));
  // Tells a launching parent (common/launcher.ts) where it listens, as the servers do.
  if (process.send) {
    const ready: ReadyMessage = { type: 'tapcredit.ready', name: 'echo', address: `127.0.0.1:${bound}` };
    process.send(ready);
    process.channel?.unref();
  }
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
