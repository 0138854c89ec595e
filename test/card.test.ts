import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import {
  diversifyCardKey,
  issueCard,
  signCreditFlag,
  verifyCardProof,
  verifyCreditFlag,
  writeCreditFlag,
  zeroAmountDebit,
} from '../common/card.js';

describe('card', () => {
  const masterKey = randomBytes(32);
  const reader = { terminalId: 'T1', terminalSequence: 7n, terminalRandom: randomBytes(8) };

  it('answers a zero-amount debit with the counter advanced and a MAC the master key verifies', () => {
    const card = issueCard(masterKey, { cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31' });
    const { card: after, proof } = zeroAmountDebit(card, reader);
    expect(after.counter).to.equal('1');
    expect(proof.counter).to.equal('1');
    expect(verifyCardProof(masterKey, proof)).to.equal(true);
  });

  it('fails verification for a card whose key is not diversified from the master key', () => {
    const card = { ...issueCard(masterKey, { cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31' }), cardKey: randomBytes(16) };
    expect(verifyCardProof(masterKey, zeroAmountDebit(card, reader).proof)).to.equal(false);
  });

  it('fails verification when any field of the proof is altered', () => {
    const card = issueCard(masterKey, { cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31' });
    const { proof } = zeroAmountDebit(card, reader);
    expect(verifyCardProof(masterKey, { ...proof, counter: '2' })).to.equal(false);
    expect(verifyCardProof(masterKey, { ...proof, terminalId: 'T2' })).to.equal(false);
    expect(verifyCardProof(masterKey, { ...proof, terminalSequence: '8' })).to.equal(false);
    expect(verifyCardProof(masterKey, { ...proof, cardId: 'C2' })).to.equal(false);
  });

  it('diversifies a different key per card', () => {
    expect(diversifyCardKey(masterKey, 'C1').equals(diversifyCardKey(masterKey, 'C2'))).to.equal(false);
  });

  it('signs a credit flag that verifies only with the issuer key and unchanged fields', () => {
    const issuer = generateKeyPairSync('ed25519');
    const other = generateKeyPairSync('ed25519');
    const flag = signCreditFlag(issuer.privateKey, { cardId: 'C1', agreementId: 'agr_1', version: 1, issuedAt: new Date() });
    expect(verifyCreditFlag(issuer.publicKey, flag)).to.equal(true);
    expect(verifyCreditFlag(other.publicKey, flag)).to.equal(false);
    expect(verifyCreditFlag(issuer.publicKey, { ...flag, cardId: 'C2' })).to.equal(false);
    expect(verifyCreditFlag(issuer.publicKey, { ...flag, agreementId: 'agr_2' })).to.equal(false);
    const card = writeCreditFlag(issueCard(masterKey, { cardId: 'C1', issuerCode: 'X', expiresOn: '2030-01-01' }), flag);
    expect(card.creditFlag).to.deep.equal(flag);
  });

  it('refuses, without throwing, a flag whose fields no issuer could have signed', () => {
    const issuer = generateKeyPairSync('ed25519');
    const flag = signCreditFlag(issuer.privateKey, { cardId: 'C1', agreementId: 'agr_1', version: 1, issuedAt: new Date() });
    expect(verifyCreditFlag(issuer.publicKey, { ...flag, issuedAt: new Date(NaN) })).to.equal(false);
    expect(verifyCreditFlag(issuer.publicKey, { ...flag, issuedAt: new Date(-1) })).to.equal(false);
    expect(verifyCreditFlag(issuer.publicKey, { ...flag, agreementId: 'a'.repeat(70_000) })).to.equal(false);
  });
});
