// Rider sign-in at the authorizer (authorizer/sign-in.ts, passwords.ts,
// signing-keys.ts) and token verification at the issuer (issuer/rider-tokens.ts):
// the domain against a real database, then the RPCs over mTLS.
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { generateKeyPair, SignJWT } from 'jose';
import { hashPassword, verifyPassword } from '../../authorizer/passwords.js';
import { refreshTokens, setRiderPassword, signIn, signOut, type SignInDeps } from '../../authorizer/sign-in.js';
import { publishedKeySet, rotateSigningKey } from '../../authorizer/signing-keys.js';
import { channelCredentials } from '../../common/tls.js';
import { callUnary } from '../../common/rpc.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { RiderTokenVerifier } from '../../issuer/rider-tokens.js';
import { expectApiError, expectGrpcError } from '../helpers/assert.js';
import { testTls } from '../helpers/pki.js';
import { money, startSystem, type System } from '../helpers/system.js';
import { fundedAccount, HOLDER_KEY, ISSUER, tempDb, type TempDb } from '../authorizer/helpers.js';

const PASSWORD = 'correct horse battery';

describe('rider sign-in (domain)', function () {
  this.timeout(30_000);
  let t: TempDb;
  let deps: SignInDeps;
  let clock: number;
  const verifier = (opts: { now?: () => number; audience?: string; maxAgeMs?: number } = {}) =>
    new RiderTokenVerifier({
      audience: opts.audience ?? ISSUER,
      fetchKeys: async () => ({ jwksJson: JSON.stringify(await publishedKeySet(t.db)), tokenIssuer: 'authorizer-1' }),
      maxAgeMs: opts.maxAgeMs,
      cooldownMs: 0,
      clockToleranceSec: 0,
      now: opts.now ?? (() => clock),
    });

  beforeEach(async () => {
    t = await tempDb();
    clock = Date.now();
    deps = {
      db: t.db,
      holderKey: HOLDER_KEY,
      authorizerId: 'authorizer-1',
      accessTokenTtlMs: 60_000,
      refreshTokenTtlMs: 3600_000,
      knowsAudience: (id) => id === ISSUER || id === 'issuer-2',
      now: () => clock,
    };
    await fundedAccount(t.db, 1, 0n);
    await fundedAccount(t.db, 2, 0n);
    await setRiderPassword(deps, 'acc-1', PASSWORD, undefined);
  });
  afterEach(() => t.close());

  it('stores an scrypt hash that verifies the password and no other', async () => {
    const stored = await hashPassword(PASSWORD);
    expect(stored).to.match(/^scrypt\$15\$8\$1\$/).and.not.include(PASSWORD);
    expect(await verifyPassword(PASSWORD, stored)).to.equal(true);
    expect(await verifyPassword('correct horse battery!', stored)).to.equal(false);
    const row = await t.db('rider_credentials').where({ account_id: 'acc-1' }).first();
    expect(row.password_hash).to.not.include(PASSWORD);
  });

  it('signs in with the right password only; an unknown account answers the same', async () => {
    await expectApiError(signIn(deps, 'acc-1', 'wrong password!', ISSUER), status.UNAUTHENTICATED, 'SIGN_IN_FAILED');
    await expectApiError(signIn(deps, 'acc-2', PASSWORD, ISSUER), status.UNAUTHENTICATED, 'SIGN_IN_FAILED'); // no password set
    await expectApiError(signIn(deps, 'acc-404', PASSWORD, ISSUER), status.UNAUTHENTICATED, 'SIGN_IN_FAILED');
    await expectApiError(signIn(deps, 'acc-1', PASSWORD, 'issuer-9'), status.NOT_FOUND, 'AUDIENCE_UNKNOWN');
    const tokens = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    expect(await verifier().verify(tokens.accessToken)).to.deep.equal({ accountId: 'acc-1' });
    expect(tokens.accessTokenExpiresAt.getTime()).to.be.within(clock + 59_000, clock + 60_000);
    expect(await t.db('refresh_tokens').pluck('token_hash')).to.not.include(tokens.refreshToken);
  });

  it('a rider changes the password only with the current one, and it ends the old sign-ins', async () => {
    const before = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    await expectApiError(setRiderPassword(deps, 'acc-1', 'another password', 'not the password'), 'SIGN_IN_FAILED');
    await expectApiError(setRiderPassword(deps, 'acc-404', 'another password', undefined), 'ACCOUNT_NOT_FOUND');
    await setRiderPassword(deps, 'acc-1', 'another password', PASSWORD);
    await expectApiError(signIn(deps, 'acc-1', PASSWORD, ISSUER), 'SIGN_IN_FAILED');
    await signIn(deps, 'acc-1', 'another password', ISSUER);
    await expectApiError(refreshTokens(deps, before.refreshToken, ISSUER), 'REFRESH_TOKEN_INVALID');
  });

  it('a refresh token is used once; a reuse revokes its whole sign-in; sign-out and expiry end it', async () => {
    const first = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    const second = await refreshTokens(deps, first.refreshToken, 'issuer-2');
    expect(await verifier({ audience: 'issuer-2' }).verify(second.accessToken)).to.deep.equal({ accountId: 'acc-1' });
    await expectApiError(refreshTokens(deps, first.refreshToken, ISSUER), status.UNAUTHENTICATED, 'REFRESH_TOKEN_INVALID');
    // The reuse revoked the family: the token the thief or the rider got next is dead too.
    await expectApiError(refreshTokens(deps, second.refreshToken, ISSUER), 'REFRESH_TOKEN_INVALID');

    const other = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    await signOut(deps, other.refreshToken);
    await signOut(deps, other.refreshToken); // idempotent
    await expectApiError(refreshTokens(deps, other.refreshToken, ISSUER), 'REFRESH_TOKEN_INVALID');

    const late = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    clock += 3600_001;
    await expectApiError(refreshTokens(deps, late.refreshToken, ISSUER), 'REFRESH_TOKEN_INVALID');
  });

  it('refuses expired, not-yet-valid, wrong-audience, badly signed and malformed tokens', async () => {
    const { accessToken } = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    await expectApiError(verifier({ now: () => clock + 61_000 }).verify(accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_EXPIRED');
    await expectApiError(verifier({ now: () => clock - 10_000 }).verify(accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    await expectApiError(verifier({ audience: 'issuer-2' }).verify(accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    // A token made by someone else's key under the authorizer's key id.
    const kid = (await publishedKeySet(t.db)).keys[0].kid!;
    const forger = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'EdDSA', kid })
      .setSubject('acc-2')
      .setAudience(ISSUER)
      .setIssuer('authorizer-1')
      .setIssuedAt(Math.floor(clock / 1000))
      .setExpirationTime(Math.floor(clock / 1000) + 60)
      .sign(forger.privateKey);
    await expectApiError(verifier().verify(forged), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    const [h, p, s] = accessToken.split('.');
    const edited = [h, Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'acc-2' })).toString('base64url'), s].join('.');
    await expectApiError(verifier().verify(edited), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    await expectApiError(verifier().verify('not.a.token'), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
  });

  it('picks up a rotated key without a restart and refuses a retired key once its cache is refreshed', async () => {
    const v = verifier({ maxAgeMs: 1_000 });
    const old = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    await v.verify(old.accessToken); // caches the set with the old key only
    await rotateSigningKey(t.db, HOLDER_KEY, { retirePrevious: false });
    const rotated = await signIn(deps, 'acc-1', PASSWORD, ISSUER);
    expect(JSON.parse(Buffer.from(rotated.accessToken.split('.')[0], 'base64url').toString()).kid).to.not.equal(
      JSON.parse(Buffer.from(old.accessToken.split('.')[0], 'base64url').toString()).kid,
    );
    await v.verify(rotated.accessToken); // unknown kid: fetched at once
    await v.verify(old.accessToken); // the previous key is still published
    await rotateSigningKey(t.db, HOLDER_KEY, { retirePrevious: true });
    clock += 1_001; // the cache's age runs out
    await expectApiError(v.verify(old.accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    await expectApiError(v.verify(rotated.accessToken), status.UNAUTHENTICATED, 'ACCESS_TOKEN_INVALID');
    await v.verify((await signIn(deps, 'acc-1', PASSWORD, ISSUER)).accessToken);
  });
});

describe('rider sign-in over mTLS', function () {
  this.timeout(60_000);
  let sys: System;
  let phone: AuthorizerServiceClient;
  let issuerSide: AuthorizerServiceClient;

  before(async () => {
    sys = await startSystem({ tls: true });
    phone = new AuthorizerServiceClient(sys.authorizer.address, channelCredentials(sys.tls!.phone, { role: 'authorizer' }));
    issuerSide = new AuthorizerServiceClient(sys.authorizer.address, channelCredentials(await testTls('issuer', 'issuer-1'), { role: 'authorizer' }));
    const c = sys.authorizerClient;
    await callUnary(c, c.openAccount, { accountId: 'acc-li', holder: { name: 'Li Lei', phoneNumber: '+8613800000001' }, currencyCode: 'CNY', creditLimit: money(0) });
  });
  after(async () => {
    phone.close();
    issuerSide.close();
    await sys.close();
  });

  it('ops sets the password; the phone app signs in, refreshes and signs out; the issuer reads the key set', async () => {
    const c = sys.authorizerClient;
    await callUnary(c, c.setRiderPassword, { accountId: 'acc-li', newPassword: PASSWORD, currentPassword: '' });
    await expectGrpcError(callUnary(phone, phone.signIn, { accountId: 'acc-li', password: 'nope nope nope', audience: 'issuer-1' }), status.UNAUTHENTICATED, 'SIGN_IN_FAILED');
    const { tokens } = await callUnary(phone, phone.signIn, { accountId: 'acc-li', password: PASSWORD, audience: 'issuer-1' });
    const published = await callUnary(issuerSide, issuerSide.getJwks, {});
    expect(published.tokenIssuer).to.equal('authorizer-1');
    expect(JSON.parse(published.jwksJson).keys[0]).to.include({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' }).and.not.have.property('d');
    const v = new RiderTokenVerifier({ audience: 'issuer-1', fetchKeys: () => callUnary(issuerSide, issuerSide.getJwks, {}) });
    expect(await v.verify(tokens!.accessToken)).to.deep.equal({ accountId: 'acc-li' });
    const next = await callUnary(phone, phone.refreshToken, { refreshToken: tokens!.refreshToken, audience: 'issuer-1' });
    await callUnary(phone, phone.signOut, { refreshToken: next.tokens!.refreshToken });
    await expectGrpcError(callUnary(phone, phone.refreshToken, { refreshToken: next.tokens!.refreshToken, audience: 'issuer-1' }), status.UNAUTHENTICATED, 'REFRESH_TOKEN_INVALID');
  });

  it('the phone app changes a password only with the current one and cannot rotate keys', async () => {
    await expectGrpcError(callUnary(phone, phone.setRiderPassword, { accountId: 'acc-li', newPassword: 'brand new password', currentPassword: '' }), status.INVALID_ARGUMENT);
    await expectGrpcError(callUnary(phone, phone.setRiderPassword, { accountId: 'acc-404', newPassword: 'brand new password', currentPassword: PASSWORD }), status.UNAUTHENTICATED, 'SIGN_IN_FAILED');
    await callUnary(phone, phone.setRiderPassword, { accountId: 'acc-li', newPassword: 'brand new password', currentPassword: PASSWORD });
    await callUnary(phone, phone.signIn, { accountId: 'acc-li', password: 'brand new password', audience: 'issuer-1' });
    await expectGrpcError(callUnary(phone, phone.rotateSigningKey, { retirePrevious: true }), status.PERMISSION_DENIED, 'PEER_ROLE_NOT_ALLOWED');
    const rotated = await callUnary(sys.authorizerClient, sys.authorizerClient.rotateSigningKey, { retirePrevious: true });
    expect(rotated.publishedKeyIds).to.deep.equal([rotated.keyId]);
  });
});
