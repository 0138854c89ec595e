// What the authorizer does for the issuer's risk control: a retried debt comes
// under a new request id naming its tap, is debited at most once per tap and
// settles under the tap id; a revoked agreement still pays for rides taken
// before its revocation.
import { expect } from 'chai';
import { getAgreement, revokeAgreement } from '../../authorizer/agreements.js';
import { deduct, type DeductItemInput } from '../../authorizer/deductions.js';
import { ledgerViolations } from '../../authorizer/ledger.js';
import { nextSettlement } from '../../authorizer/settlement.js';
import { topUp } from '../../authorizer/accounts.js';
import { CURRENCY, ISSUER, agreementFor, expectApiError, fundedAccount, tempDb, type TempDb } from './helpers.js';

describe('authorizer: retried debts and revoked agreements', () => {
  let t: TempDb;
  beforeEach(async () => (t = await tempDb()));
  afterEach(async () => {
    expect(await ledgerViolations(t.db)).to.deep.equal([]);
    await t.close();
  });

  const item = (requestId: string, agreementId: string, tapId?: string, tappedAt = new Date()): DeductItemInput => ({
    requestId,
    tapId,
    agreementId,
    amount: 200n,
    currency: CURRENCY,
    tappedAt,
  });

  it('debits a retry of a declined tap under its new request id and settles it under the tap id', async () => {
    const acc = await fundedAccount(t.db, 1, 100n);
    const agr = await agreementFor(t.db, 1);
    expect((await deduct(t.db, ISSUER, [item('T1:1', agr)]))[0]).to.include({ status: 'DECLINED', declineReason: 'INSUFFICIENT_FUNDS' });
    await topUp(t.db, { requestId: 'more', fingerprint: 'x', accountId: acc, amount: 1_000n, currency: CURRENCY });
    // The first id keeps its decline; the retry is a new debit.
    expect((await deduct(t.db, ISSUER, [item('T1:1', agr)]))[0]).to.include({ status: 'DECLINED' });
    const [retry] = await deduct(t.db, ISSUER, [item('T1:1:r1', agr, 'T1:1')]);
    expect(retry.status).to.equal('DEBITED');
    const batch = (await nextSettlement(t.db, ISSUER))!;
    expect(batch.items).to.deep.equal([{ deductionId: (retry as { deductionId: string }).deductionId, tapId: 'T1:1', amount: 200n }]);
  });

  it('never debits one tap twice, whatever the request id; a repeat of the debited id returns its first result', async () => {
    await fundedAccount(t.db, 1, 10_000n);
    const agr = await agreementFor(t.db, 1);
    const [first] = await deduct(t.db, ISSUER, [item('T1:1', agr)]);
    expect(first.status).to.equal('DEBITED');
    const [second, third] = await deduct(t.db, ISSUER, [item('T1:1:r1', agr, 'T1:1'), item('T1:2:r1', agr, 'T1:2')]);
    expect(second).to.include({ status: 'REJECTED', errorReason: 'TAP_ALREADY_DEBITED' });
    expect(third.status).to.equal('DEBITED');
    // Two retries of one tap in the same batch: only the first is debited.
    const [a, b] = await deduct(t.db, ISSUER, [item('T1:3:r1', agr, 'T1:3'), item('T1:3:r2', agr, 'T1:3')]);
    expect([a.status, b.status]).to.deep.equal(['DEBITED', 'REJECTED']);
    expect(await deduct(t.db, ISSUER, [item('T1:1', agr)])).to.deep.equal([first]);
  });

  it('names a reused request id that now points at another tap', async () => {
    await fundedAccount(t.db, 1, 10_000n);
    const agr = await agreementFor(t.db, 1);
    await deduct(t.db, ISSUER, [item('T1:9:r1', agr, 'T1:9')]);
    expect((await deduct(t.db, ISSUER, [item('T1:9:r1', agr, 'T1:8')]))[0]).to.include({ status: 'REJECTED', errorReason: 'REQUEST_ID_REUSED' });
  });

  it('still debits rides taken before a revocation, declines later ones, and revokes idempotently', async () => {
    await fundedAccount(t.db, 1, 10_000n);
    const agr = await agreementFor(t.db, 1);
    const revokedAt = Date.now();
    const revoked = await revokeAgreement(t.db, agr, revokedAt, ISSUER);
    expect(revoked.state).to.equal('REVOKED');
    expect(revoked.revokedAt!.getTime()).to.equal(revokedAt);
    expect((await revokeAgreement(t.db, agr, revokedAt + 5_000, ISSUER)).revokedAt!.getTime(), 'the first revocation time is kept').to.equal(revokedAt);

    const [before, after] = await deduct(t.db, ISSUER, [item('T1:1', agr, undefined, new Date(revokedAt - 1)), item('T1:2', agr, undefined, new Date(revokedAt + 1))]);
    expect(before.status).to.equal('DEBITED');
    expect(after).to.include({ status: 'DECLINED', declineReason: 'AGREEMENT_REVOKED' });
  });

  it('reports another issuer\'s agreement as not found and leaves it active', async () => {
    await fundedAccount(t.db, 1, 10_000n);
    const agr = await agreementFor(t.db, 1);
    await expectApiError(revokeAgreement(t.db, agr, Date.now(), 'issuer-2'), 'AGREEMENT_NOT_FOUND');
    expect((await getAgreement(t.db, agr)).state).to.equal('ACTIVE');
  });
});
