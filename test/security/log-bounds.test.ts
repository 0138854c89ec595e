// Abuse of the logs: a caller cannot grow a server's log by sending long
// fields, and every access log line names the caller's certificate identity.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { boundedForLog, MAX_LOGGED_ID, requestIds } from '../../common/observe.js';
import { callUnary } from '../../common/rpc.js';
import { expectGrpcError } from '../helpers/assert.js';
import { captureLogs } from '../helpers/logs.js';
import { startSystem } from '../helpers/system.js';

describe('access log bounds', function () {
  this.timeout(60_000);

  it('cuts every id to a bounded length, noting how long it was', () => {
    const huge = 'C'.repeat(1 << 20);
    const ids = requestIds({ cardId: huge, requestId: 'r-1', taps: [{ tapId: huge }] });
    expect(ids.card_id).to.equal(`${'C'.repeat(MAX_LOGGED_ID)}...(1048576 chars)`);
    expect(ids.request_id).to.equal('r-1');
    expect(ids.tap_ids).to.deep.equal([boundedForLog(huge)]);
    expect(JSON.stringify(ids).length).to.be.lessThan(300);
  });

  it('a 1 MB card id grows the issuer log by a few hundred bytes; the line names the caller certificate', async () => {
    const logs = captureLogs();
    const sys = await startSystem({ tls: true, log: logs.log });
    try {
      const c = sys.issuerClient;
      const before = logs.text().length;
      await expectGrpcError(callUnary(c, c.getCard, { cardId: 'C'.repeat(1 << 20) }), status.INVALID_ARGUMENT);
      const grown = logs.text().slice(before);
      expect(grown.length).to.be.lessThan(1_500);
      const line = logs.lines().find((l) => l.msg === 'rpc' && l.rpc === 'GetCard');
      expect(line).to.deep.include({ peer_identity: 'spiffe://tapcredit/ops/admin', code: 'INVALID_ARGUMENT' });
    } finally {
      await sys.close();
    }
  });
});
