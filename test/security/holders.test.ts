// The authorizer keeps account holders' names and phone numbers only as keyed
// hashes: it can still tell the holder from a stranger, but its database
// (and GetAccount) show neither.
import { expect } from 'chai';
import { getAccount, openAccount } from '../../authorizer/accounts.js';
import { authorizeEnrollment } from '../../authorizer/agreements.js';
import { hashClearHolders, holderDigest } from '../../authorizer/holders.js';
import { callUnary } from '../../common/rpc.js';
import { CURRENCY, HOLDER_KEY, digestOf, expectApiError, holder, tempDb, type TempDb } from '../authorizer/helpers.js';
import { openAccount as openAccountOverGrpc, rider } from '../helpers/rider.js';
import { startSystem } from '../helpers/system.js';

/** Every value stored in every row of the table, as text. */
async function storedText(t: TempDb, table: string): Promise<string> {
  return JSON.stringify(await t.db(table).select('*'));
}

describe('account holders as keyed hashes', () => {
  let t: TempDb;
  beforeEach(async () => {
    t = await tempDb();
  });
  afterEach(async () => {
    await t.close();
  });

  const enrollment = (riderDigest: ReturnType<typeof digestOf>) => ({
    requestId: 'enr-1',
    fingerprint: 'fp',
    issuerId: 'issuer-1',
    accountId: 'acc-1',
    rider: riderDigest,
    cardId: 'C1',
  });

  it('stores neither the name nor the phone number, yet recognizes the holder', async () => {
    const h = holder(1);
    await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(h), currency: CURRENCY, creditLimit: 100n });
    const stored = await storedText(t, 'accounts');
    expect(stored).to.not.include(h.phoneNumber);
    expect(stored).to.not.include(h.phoneNumber.slice(1));
    expect(stored.toLowerCase()).to.not.include(h.name.toLowerCase());
    const agreement = await authorizeEnrollment(t.db, enrollment(digestOf({ name: 'rider 1', phoneNumber: h.phoneNumber })));
    expect(agreement.state).to.equal('ACTIVE');
  });

  it('tells a stranger from the holder, and needs the same key to do so', async () => {
    await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 100n });
    await expectApiError(authorizeEnrollment(t.db, enrollment(digestOf(holder(2)))), 'RIDER_MISMATCH');
    const otherKey = Buffer.alloc(32, 8);
    await expectApiError(authorizeEnrollment(t.db, enrollment(holderDigest(otherKey, holder(1)))), 'RIDER_MISMATCH');
  });

  it('hashes the clear details of accounts stored before, once', async () => {
    await openAccount(t.db, { accountId: 'acc-1', holder: digestOf(holder(1)), currency: CURRENCY, creditLimit: 100n });
    // An account as the first schema stored it: details in clear, no hashes.
    await t.db('accounts').where({ account_id: 'acc-1' }).update({ holder_name: 'Rider 1', holder_phone: holder(1).phoneNumber, holder_name_hash: null, holder_phone_hash: null });
    expect(await hashClearHolders(t.db, HOLDER_KEY)).to.equal(1);
    expect(await hashClearHolders(t.db, HOLDER_KEY)).to.equal(0);
    expect(await storedText(t, 'accounts')).to.not.include(holder(1).phoneNumber);
    expect((await getAccount(t.db, 'acc-1')).holder).to.deep.equal(digestOf(holder(1)));
  });
});

describe('GetAccount', function () {
  this.timeout(30_000);
  it('does not return the holder details', async () => {
    const sys = await startSystem();
    try {
      await openAccountOverGrpc(sys, rider(7));
      const { account } = await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId: rider(7).accountId });
      expect(account?.accountId).to.equal(rider(7).accountId);
      expect(account?.holder).to.equal(undefined);
    } finally {
      await sys.close();
    }
  });
});
