// The audit trail of ops calls (common/audit.ts) on real servers over mTLS:
// who, what, when, why and how it ended, readable by ops only.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { AUDIT_REASON_METADATA } from '../../common/audit.js';
import { callUnary } from '../../common/rpc.js';
import { DenyListReason } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { expectGrpcError } from '../helpers/assert.js';
import { enroll, openAccount, rider, riderToken } from '../helpers/rider.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

describe('audit trail of ops calls (mTLS)', function () {
  this.timeout(60_000);
  let sys: System;
  before(async () => {
    sys = await startSystem({ tls: true });
  });
  after(() => sys.close());

  it('records who, what, when, why and the outcome of every ops action; rider calls are not ops actions', async () => {
    const r = rider(41);
    const started = Date.now();
    await openAccount(sys, r);
    await enroll(sys, newCard(sys, 'CX1'), r);
    const c = sys.issuerClient;
    const why = new Metadata();
    why.set(AUDIT_REASON_METADATA, 'ticket 4711: rider called the help desk, card stolen');
    await new Promise((resolve, reject) =>
      c.addToDenyList({ cardId: 'CX1', reason: DenyListReason.DENY_LIST_REASON_LOST }, why, (err: ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res))),
    );
    await expectGrpcError(callUnary(c, c.getCard, { cardId: 'CX404' }), status.NOT_FOUND);
    // The rider's own read (phone app with a token) is not an ops action.
    await callUnary(sys.phone.issuerClient, sys.phone.issuerClient.getCard, { cardId: 'CX1' }, undefined, await riderToken(sys, r));

    const { entries } = await callUnary(c, c.listAuditEntries, { pageSize: 10, pageToken: '' });
    expect(entries.map((e) => [e.rpc, e.target, e.outcome])).to.deep.equal([
      ['IssuerService.GetCard', 'card_id=CX404', 'CARD_NOT_FOUND'],
      ['IssuerService.AddToDenyList', 'card_id=CX1 reason=' + DenyListReason.DENY_LIST_REASON_LOST, 'OK'],
    ]);
    expect(entries[1]).to.deep.include({ actor: 'spiffe://tapcredit/ops/admin', reason: 'ticket 4711: rider called the help desk, card stolen' });
    expect(entries[1].at!.getTime()).to.be.within(started, Date.now());

    const a = sys.authorizerClient;
    const trail = await callUnary(a, a.listAuditEntries, { pageSize: 2, pageToken: '' });
    expect(trail.entries.map((e) => e.rpc)).to.deep.equal(['AuthorizerService.SetRiderPassword', 'AuthorizerService.TopUp']);
    expect(trail.entries[1].target).to.equal(`request_id=${trail.entries[1].target.split('=')[1].split(' ')[0]} account_id=${r.accountId}`);
    expect(JSON.stringify(trail.entries)).to.not.include(r.name).and.not.include(r.phoneNumber);
    const next = await callUnary(a, a.listAuditEntries, { pageSize: 2, pageToken: trail.nextPageToken });
    expect(next.entries.map((e) => e.rpc)).to.deep.equal(['AuthorizerService.OpenAccount']);
    expect(next.nextPageToken).to.equal('');
  });

  it('is readable by ops only', async () => {
    const p = sys.phone.issuerClient;
    await expectGrpcError(callUnary(p, p.listAuditEntries, { pageSize: 1, pageToken: '' }), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
  });
});
