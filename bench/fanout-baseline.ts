// The fan-out baseline: a bare grpc-js server speaking IssuerService
// WatchDenyList with the same transport as the issuer (mTLS with its
// certificate, or plaintext with --insecure) and nothing else: no
// authorization, database, logging or backpressure. Each stream gets an
// empty first message; each AddToDenyList call writes one change, encoded
// once, to every open stream, and answers. Run as its own process:
//   node --import tsx bench/fanout-baseline.ts --port 50098 [--insecure]
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import { booleanFlag, intSetting } from '../common/config.js';
import type { ReadyMessage } from '../common/process.js';
import { passEncodedResponses } from '../common/server-stream.js';
import { loadTls, serverCredentials, tlsFilesFromSettings } from '../common/tls.js';
import {
  DenyListAction,
  DenyListReason,
  IssuerServiceService,
  WatchDenyListResponse,
  type AddToDenyListRequest,
  type AddToDenyListResponse,
  type WatchDenyListRequest,
} from '../gen/tapcredit/issuer/v1/issuer.js';

const port = intSetting('port', 'BASELINE_PORT', 0);
const credentials = booleanFlag('insecure') ? ServerCredentials.createInsecure() : serverCredentials(loadTls(tlsFilesFromSettings('issuer')));

const streams = new Set<ServerWritableStream<WatchDenyListRequest, unknown>>();
let version = 0;
const encode = (m: WatchDenyListResponse) => Buffer.from(WatchDenyListResponse.encode(m).finish());

const server = new Server();
server.addService(passEncodedResponses(IssuerServiceService), {
  watchDenyList(call: ServerWritableStream<WatchDenyListRequest, unknown>) {
    streams.add(call);
    call.on('cancelled', () => streams.delete(call));
    call.write(encode({ changes: [], headVersion: String(version), reset: false }));
  },
  addToDenyList(call: ServerUnaryCall<AddToDenyListRequest, AddToDenyListResponse>, callback: sendUnaryData<AddToDenyListResponse>) {
    version++;
    const change = {
      version: String(version),
      cardId: call.request.cardId,
      action: DenyListAction.DENY_LIST_ACTION_ADD,
      reason: call.request.reason,
      reasons: [call.request.reason],
      changedAt: new Date(),
    };
    const bytes = encode({ changes: [change], headVersion: String(version), reset: false });
    for (const s of streams) s.write(bytes);
    callback(null, { entry: { cardId: call.request.cardId, reasons: [DenyListReason.DENY_LIST_REASON_LOST], listedAt: new Date() }, version: String(version) });
  },
});
server.bindAsync(`127.0.0.1:${port}`, credentials, (err, bound) => {
  if (err) throw err;
  console.log(JSON.stringify({ msg: 'fan-out baseline listening', port: bound }));
  // Tells a launching parent (common/launcher.ts) where it listens, as the servers do.
  if (process.send) {
    const ready: ReadyMessage = { type: 'tapcredit.ready', name: 'fanout-baseline', address: `127.0.0.1:${bound}` };
    process.send(ready);
    process.channel?.unref();
  }
});
const stop = () => {
  for (const s of streams) s.end();
  server.tryShutdown(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
