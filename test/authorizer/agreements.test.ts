// AuthorizeEnrollment in the domain: the account checks and the agreement.
import { expect } from 'chai';
import { setAccountState } from '../../authorizer/accounts.js';
import { authorizeEnrollment, getAgreement, revokeAgreement } from '../../authorizer/agreements.js';
import { ISSUER, digestOf, expectApiError, fundedAccount, holder, rowCounts, tempDb, type TempDb } from './helpers.js';

describe('authorizer agreements (AuthorizeEnrollment)', () => {
  let t: TempDb;
  beforeEach(async () => {
    t = await tempDb();
  });
  afterEach(async () => {
    await t.close();
  });

  const request = (over: Partial<Parameters<typeof authorizeEnrollment>[1]> = {}) => ({
    requestId: 'enr-1',
    fingerprint: 'fp-1',
    issuerId: ISSUER,
    accountId: 'acc-1',
    rider: digestOf(holder(1)),
    cardId: 'C1',
    ...over,
  });

  it('registers an active agreement for the issuer and card', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const a = await authorizeEnrollment(t.db, request());
    expect(a.agreementId).to.match(/^agr_/);
    expect(a).to.include({ accountId: 'acc-1', issuerId: ISSUER, cardId: 'C1', state: 'ACTIVE' });
    expect(await getAgreement(t.db, a.agreementId)).to.deep.equal(a);
  });

  it('accepts the holder name in another case and spacing', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const a = await authorizeEnrollment(t.db, request({ rider: digestOf({ name: '  RIDER   1 ', phoneNumber: holder(1).phoneNumber }) }));
    expect(a.state).to.equal('ACTIVE');
  });

  it('returns the same agreement for a repeated request and stores nothing more', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const first = await authorizeEnrollment(t.db, request());
    const before = await rowCounts(t.db);
    expect(await authorizeEnrollment(t.db, request())).to.deep.equal(first);
    expect(await rowCounts(t.db)).to.deep.equal(before);
  });

  it('refuses a reused request id with another payload (REQUEST_ID_REUSED)', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    await authorizeEnrollment(t.db, request());
    await expectApiError(authorizeEnrollment(t.db, request({ fingerprint: 'fp-2', cardId: 'C2' })), 'REQUEST_ID_REUSED');
  });

  describe('refusals store nothing', () => {
    async function expectRefused(over: Partial<Parameters<typeof authorizeEnrollment>[1]>, reason: string) {
      const before = await rowCounts(t.db);
      await expectApiError(authorizeEnrollment(t.db, request(over)), reason);
      expect(await rowCounts(t.db)).to.deep.equal(before);
    }

    it('an unknown account: ACCOUNT_NOT_FOUND', async () => {
      await expectRefused({ accountId: 'acc-404' }, 'ACCOUNT_NOT_FOUND');
    });

    it('another rider\'s name or phone: RIDER_MISMATCH', async () => {
      await fundedAccount(t.db, 1, 1_000n);
      await expectRefused({ rider: digestOf({ name: 'Someone Else', phoneNumber: holder(1).phoneNumber }) }, 'RIDER_MISMATCH');
      await expectRefused({ rider: digestOf({ name: holder(1).name, phoneNumber: '+8613999999999' }) }, 'RIDER_MISMATCH');
    });

    it('a frozen account: ACCOUNT_FROZEN', async () => {
      await fundedAccount(t.db, 1, 1_000n);
      await setAccountState(t.db, 'acc-1', 'FROZEN');
      await expectRefused({}, 'ACCOUNT_FROZEN');
    });

    it('an account with nothing available: ACCOUNT_NOT_ELIGIBLE', async () => {
      await fundedAccount(t.db, 1, 0n);
      await expectRefused({}, 'ACCOUNT_NOT_ELIGIBLE');
    });

    it('a refused request id can be retried once the account is fixed', async () => {
      await fundedAccount(t.db, 1, 0n);
      await expectRefused({}, 'ACCOUNT_NOT_ELIGIBLE');
      await fundedAccount(t.db, 1, 100n); // same details: the open is a repeat, the top-up funds it
      expect((await authorizeEnrollment(t.db, request())).state).to.equal('ACTIVE');
    });
  });

  it('an agreement with credit but no balance is eligible', async () => {
    await fundedAccount(t.db, 1, 0n, 500n);
    expect((await authorizeEnrollment(t.db, request())).state).to.equal('ACTIVE');
  });

  it('revokes an agreement', async () => {
    await fundedAccount(t.db, 1, 1_000n);
    const a = await authorizeEnrollment(t.db, request());
    expect((await revokeAgreement(t.db, a.agreementId)).state).to.equal('REVOKED');
    await expectApiError(revokeAgreement(t.db, 'agr_nope'), 'AGREEMENT_NOT_FOUND');
  });
});
