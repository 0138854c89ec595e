// The card protocol's test vectors (docs/card-protocol-vectors.json) against
// the TypeScript code, and docs/card-protocol.md against the vectors: the
// document, the vectors and the code cannot drift apart. The Python card
// emulator is checked against the same file (test/python/python-client.test.ts).
import { createHmac, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { computeCardMac, creditFlagPayload, diversifyCardKey, signCreditFlag, verifyCardProof, verifyCreditFlag } from '../common/card.js';
import { CardEmulator, PHONE_READER_ID, PHONE_TERMINAL_SEQUENCE, readForEnrollment } from '../common/card-emulator.js';
import { PresentCardRequest, PresentCardResponse } from '../gen/tapcredit/terminal/v1/terminal.js';
import { CardAnswer, CardCommand, CardStatus } from '../gen/tapcredit/type/v1/card.js';

const vectors = JSON.parse(readFileSync(new URL('../docs/card-protocol-vectors.json', import.meta.url), 'utf8'));
const doc = readFileSync(new URL('../docs/card-protocol.md', import.meta.url), 'utf8');
const hex = (s: string) => Buffer.from(s, 'hex');
const masterKey = hex(vectors.masterKey);
const flagVector = vectors.creditFlag;
/** Ed25519 private key from its 32-byte seed (RFC 8032), as PKCS #8. */
const signingKey = createPrivateKey({ key: Buffer.concat([hex('302e020100300506032b657004220420'), hex(flagVector.signingKeySeed)]), format: 'der', type: 'pkcs8' });
const publicKey = createPublicKey(signingKey);
const flagFields = { cardId: flagVector.cardId, agreementId: flagVector.agreementId, version: flagVector.version, issuedAt: new Date(Number(flagVector.issuedAtMs)) };

describe('card protocol test vectors', () => {
  it('diversifies the card key: HMAC-SHA256(master, "tapcredit/card-key/v1\\0" || card id), first 16 bytes', () => {
    expect(diversifyCardKey(masterKey, vectors.cardId).toString('hex')).to.equal(vectors.cardKey);
  });

  it('lays out the MAC input and computes the MAC of each vector', () => {
    for (const m of vectors.macs) {
      const input = { ...m, terminalRandom: hex(m.terminalRandom) };
      expect(computeCardMac(hex(vectors.cardKey), input).toString('hex'), m.name).to.equal(m.mac);
      // The layout: HMAC over the documented input bytes gives the same MAC.
      expect(computeCardMac(hex(vectors.cardKey), input).equals(hmacOf(hex(vectors.cardKey), hex(m.macInput))), m.name).to.equal(true);
      expect(verifyCardProof(masterKey, { ...input, mac: hex(m.mac) }), m.name).to.equal(true);
    }
  });

  it('signs the credit flag payload to the vector signature, which the public key verifies', () => {
    expect((createPublicKey(signingKey).export({ format: 'der', type: 'spki' }) as Buffer).subarray(-32).toString('hex')).to.equal(flagVector.publicKey);
    expect(creditFlagPayload(flagFields).toString('hex')).to.equal(flagVector.payload);
    const flag = signCreditFlag(signingKey, flagFields);
    expect(flag.signature.toString('hex')).to.equal(flagVector.signature);
    expect(verifyCreditFlag(publicKey, flag)).to.equal(true);
    expect(flagVector.issuedAt).to.equal(flagFields.issuedAt.toISOString());
  });

  it('plays the exchange: the card emulator answers the vector commands with the vector answers, byte for byte', () => {
    const ex = vectors.exchange;
    const flag = signCreditFlag(signingKey, flagFields);
    const card = new CardEmulator({ cardId: vectors.cardId, issuerCode: 'CITY1', expiresOn: '2030-12-31', counter: '7', cardKey: hex(vectors.cardKey), creditFlag: flag });
    const answer = (commandHex: string) => {
      const command = PresentCardResponse.decode(hex(commandHex)).command;
      return Buffer.from(PresentCardRequest.encode({ answer: card.answer(command) }).finish()).toString('hex');
    };
    expect(answer(ex.readCommand)).to.equal(ex.readAnswer);
    expect(answer(ex.debitCommand)).to.equal(ex.debitAnswer);
    expect(PresentCardRequest.decode(hex(ex.debitAnswer)).answer!.debit!.mac).to.deep.equal(hex(vectors.macs[0].mac));
    expect(card.card.counter).to.equal('8');
    // The reader saw ACCEPT: COMPLETE, and the next READ shows the record.
    expect(Buffer.from(CardAnswer.encode(card.answer(CardCommand.decode(hex(ex.completeCommand)))).finish()).toString('hex')).to.equal(ex.completeAnswer);
    expect(answer(ex.readCommand)).to.equal(ex.readAnswerAfterComplete);
    expect(card.card.lastCompleted).to.deep.equal({ tapId: 'T0001:42', counter: '8' });
  });

  it('keeps the record of the highest completed counter, and refuses a COMPLETE it could not have earned', () => {
    const card = new CardEmulator({ cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31', counter: '5', cardKey: hex(vectors.cardKey), creditFlag: undefined });
    const complete = (tapId: string, counter: string) => card.answer({ read: undefined, debit: undefined, complete: { tapId, counter } });
    expect(complete('T1:9', '4').complete!.lastCompleted).to.deep.equal({ tapId: 'T1:9', counter: '4' });
    expect(complete('T1:8', '3').complete!.lastCompleted, 'an older one changes nothing').to.deep.equal({ tapId: 'T1:9', counter: '4' });
    for (const [tapId, counter] of [['T1:10', '6'], ['', '5'], ['T1:10', '0']]) expect(complete(tapId, counter).status, `${tapId} ${counter}`).to.equal(CardStatus.CARD_STATUS_REJECTED);
    expect(card.card.lastCompleted).to.deep.equal({ tapId: 'T1:9', counter: '4' });
  });

  it('reads for enrollment as reader "phone" with sequence 0, as the phone vector says', () => {
    const phone = vectors.macs.find((m: { name: string }) => m.name === 'phone enrollment read');
    const card = new CardEmulator({ cardId: vectors.cardId, issuerCode: 'CITY1', expiresOn: '2030-12-31', counter: '0', cardKey: hex(vectors.cardKey), creditFlag: undefined });
    const { proof } = readForEnrollment(card, hex(phone.terminalRandom));
    expect([proof.terminalId, proof.terminalSequence]).to.deep.equal([PHONE_READER_ID, PHONE_TERMINAL_SEQUENCE.toString()]);
    expect({ ...proof, terminalRandom: proof.terminalRandom.toString('hex'), mac: proof.mac.toString('hex') }).to.deep.include({
      terminalId: phone.terminalId,
      terminalSequence: phone.terminalSequence,
      counter: phone.counter,
      terminalRandom: phone.terminalRandom,
      mac: phone.mac,
    });
  });

  it('refuses commands it does not know, and debits it cannot MAC', () => {
    const card = new CardEmulator({ cardId: 'C1', issuerCode: 'CITY1', expiresOn: '2030-12-31', counter: '0', cardKey: hex(vectors.cardKey), creditFlag: undefined });
    expect(card.answer({ read: undefined, debit: undefined }).status).to.equal(CardStatus.CARD_STATUS_COMMAND_NOT_SUPPORTED);
    expect(card.answer({ read: undefined, debit: { amount: '0', terminalId: 'T1', terminalSequence: '1', terminalRandom: Buffer.alloc(4) } }).status).to.equal(CardStatus.CARD_STATUS_REJECTED);
    expect(card.card.counter).to.equal('0');
  });

  it('docs/card-protocol.md shows every vector as the JSON file has it', () => {
    const flat = doc.replace(/\s+/g, ' ');
    const values: [string, string][] = [
      ['master key', vectors.masterKey],
      ['card key', vectors.cardKey],
      ['signing key seed', flagVector.signingKeySeed],
      ['public key', flagVector.publicKey],
      ['flag payload', flagVector.payload],
      ['signature', flagVector.signature],
      ...Object.entries(vectors.exchange as Record<string, string>).filter(([k]) => k !== 'note'),
      ...vectors.macs.flatMap((m: Record<string, string>) => [
        [`${m.name} MAC input`, m.macInput],
        [`${m.name} MAC`, m.mac],
      ]),
    ];
    for (const [name, value] of values) expect(flat.includes(value) || flat.includes(groups(value)), `${name} ${value} in docs/card-protocol.md`).to.equal(true);
  });
});

/** The MAC from its input bytes alone: HMAC-SHA256, first 8 bytes. */
const hmacOf = (key: Buffer, message: Buffer) => createHmac('sha256', key).update(message).digest().subarray(0, 8);
/** Long hex as the document may wrap it: groups of 32 digits separated by spaces. */
const groups = (value: string) => value.match(/.{1,32}/g)!.join(' ');
