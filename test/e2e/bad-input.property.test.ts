// Property-based bad input (fast-check): thousands of random and malformed
// requests to every RPC of the three services, sent as raw bytes the way a
// client in any language could send them:
// - messages built from the RPC's descriptor with random, missing, huge,
//   negative, overflowing and unknown-enum values, sometimes with a field
//   on the wrong wire type;
// - valid requests with one to three fields broken;
// - random bytes as the message body.
// Every answer must be a deliberate one: no UNKNOWN or INTERNAL (or a hang),
// an ErrorInfo reason on every error and BadRequest field violations on
// INVALID_ARGUMENT; a refused request changes no table; every server stays
// SERVING. A failure prints fast-check's seed and the shrunk request.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client, credentials, status, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { expect } from 'chai';
import fc from 'fast-check';
import type { Knex } from 'knex';
import { newTerminalRandom, zeroAmountDebit } from '../../common/card.js';
import { decodeErrorDetails } from '../../common/errors.js';
import { callUnary } from '../../common/rpc.js';
import * as authorizerApi from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import * as issuerApi from '../../gen/tapcredit/issuer/v1/issuer.js';
import * as terminalApi from '../../gen/tapcredit/terminal/v1/terminal.js';
import { CardStatus, type CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { sleep } from '../helpers/assert.js';
import { enroll, openAccount, rider, tap } from '../helpers/rider.js';
import { ISSUER_ID, money, newCard, startSystem, waitFor, type System } from '../helpers/system.js';

/** Requests per RPC; with about 25 RPCs, a few thousand in all. */
const RUNS_PER_RPC = Number(process.env.TAPCREDIT_FUZZ_RUNS ?? 100);
const FORBIDDEN = new Set([status.UNKNOWN, status.INTERNAL, status.DEADLINE_EXCEEDED, status.UNIMPLEMENTED, status.DATA_LOSS]);

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(new URL('../../gen/descriptor.binpb', import.meta.url))));

// --- random messages from descriptors, written straight to the wire ---

type Write = (w: BinaryWriter) => void;

const HUGE = 'x'.repeat(70_000);
const nastyStrings = fc.constantFrom('', ' ', HUGE, '\u0000', 'ü'.repeat(65), '-1', '0', '9223372036854775808', '18446744073709551616', '1e9', 'NaN', 'a:b:c', '../../etc', 'CNY', 'cny', 'XXXX', '2030-02-30', '2030-01-01', '+8613800000000', 'T1:1', 'C1', 'acc-1', 'issuer-1', 'authorizer-1');
const anyString = fc.oneof(nastyStrings, fc.string({ maxLength: 80 }), fc.stringMatching(/^[A-Za-z0-9._:-]{1,70}$/), fc.string({ unit: 'binary', maxLength: 40 }));
const int64s = fc.oneof(fc.constantFrom(0n, -1n, 1n, 200n, 2n ** 31n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const uint64s = fc.oneof(fc.constantFrom(0n, 1n, 2n ** 63n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const bytesValues = fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.constant(new Uint8Array(70_000)), fc.constant(new Uint8Array(8)));

function scalarWrite(no: number, type: ScalarType): fc.Arbitrary<Write> {
  switch (type) {
    case ScalarType.STRING:
      return anyString.map((s) => (w: BinaryWriter) => w.tag(no, WireType.LengthDelimited).string(s));
    case ScalarType.BYTES:
      return bytesValues.map((b) => (w: BinaryWriter) => w.tag(no, WireType.LengthDelimited).bytes(b));
    case ScalarType.BOOL:
      return fc.boolean().map((b) => (w: BinaryWriter) => w.tag(no, WireType.Varint).bool(b));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return uint64s.map((v) => (w: BinaryWriter) => w.tag(no, WireType.Varint).uint64(v));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double().map((v) => (w: BinaryWriter) => w.tag(no, WireType.Bit64).double(v));
    default:
      // int32 fields get 64-bit values too: an overflowing varint is bad input as well.
      return int64s.map((v) => (w: BinaryWriter) => w.tag(no, WireType.Varint).int64(v));
  }
}

/** A value on a wire type the field does not have. */
const wrongWireType = (no: number): fc.Arbitrary<Write> =>
  fc.oneof(
    fc.integer().map((v) => (w: BinaryWriter) => w.tag(no, WireType.Bit32).fixed32(v >>> 0)),
    fc.uint8Array({ maxLength: 12 }).map((b) => (w: BinaryWriter) => w.tag(no, WireType.LengthDelimited).bytes(b)),
    int64s.map((v) => (w: BinaryWriter) => w.tag(no, WireType.Varint).int64(v)),
  );

function fieldWrites(field: DescField, depth: number): fc.Arbitrary<Write[]> {
  const one = (): fc.Arbitrary<Write> => {
    if (field.fieldKind === 'scalar' || (field.fieldKind === 'list' && field.listKind === 'scalar')) return scalarWrite(field.number, field.scalar!);
    if (field.fieldKind === 'enum' || (field.fieldKind === 'list' && field.listKind === 'enum')) {
      const values = (field.fieldKind === 'enum' ? field.enum : field.enum!).values.map((v) => v.number);
      return fc.oneof(fc.constantFrom(...values), fc.integer({ min: -3, max: 1000 })).map((v) => (w: BinaryWriter) => w.tag(field.number, WireType.Varint).int32(v));
    }
    const message = field.fieldKind === 'message' ? field.message : field.fieldKind === 'list' ? field.message! : undefined;
    if (!message || depth <= 0) return wrongWireType(field.number);
    return messageWrites(message, depth - 1).map((writes) => (w: BinaryWriter) => {
      w.tag(field.number, WireType.LengthDelimited).fork();
      for (const write of writes) write(w);
      w.join();
    });
  };
  const value = fc.oneof({ weight: 12, arbitrary: one() }, { weight: 1, arbitrary: wrongWireType(field.number) });
  return field.fieldKind === 'list' || field.fieldKind === 'map' ? fc.array(value, { maxLength: 4 }) : fc.option(value, { nil: undefined, freq: 3 }).map((w) => (w ? [w] : []));
}

const messageArbs = new Map<string, fc.Arbitrary<Write[]>>();

function messageWrites(desc: DescMessage, depth: number): fc.Arbitrary<Write[]> {
  const key = `${desc.typeName}/${depth}`;
  let arb = messageArbs.get(key);
  if (!arb) {
    const fields = desc.fields.map((f) => fieldWrites(f, depth));
    arb = (fields.length > 0 ? fc.tuple(...fields) : fc.constant([] as Write[][])).map((parts) => parts.flat());
    messageArbs.set(key, arb);
  }
  return arb;
}

/** A request body; prints short in fast-check's counterexamples (the test's failure message shows it as JSON). */
class Body {
  constructor(readonly bytes: Buffer) {}
  [fc.toStringMethod]() {
    return `<${this.bytes.length} bytes: ${this.bytes.subarray(0, 48).toString('hex')}${this.bytes.length > 48 ? '...' : ''}>`;
  }
}

const encodeWrites = (writes: Write[]) => {
  const w = new BinaryWriter();
  for (const write of writes) write(w);
  return new Body(Buffer.from(w.finish()));
};

// --- valid requests with some fields broken ---

type Path = (string | number)[];

function leafPaths(value: unknown, path: Path = [], out: Path[] = []): Path[] {
  if (path.length > 0) out.push(path);
  if (Array.isArray(value)) value.forEach((v, i) => leafPaths(v, [...path, i], out));
  else if (value && typeof value === 'object' && !(value instanceof Date) && !(value instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(value)) leafPaths(v, [...path, k], out);
  }
  return out;
}

/** A broken version of a value, of the same JS type where that can still be encoded. */
function brokenValue(value: unknown, pick: fc.Arbitrary<number>): fc.Arbitrary<unknown> {
  if (typeof value === 'string') return fc.oneof(nastyStrings, anyString);
  if (typeof value === 'number') return fc.constantFrom(0, -1, 1, 999, -2147483648, 2147483647);
  if (typeof value === 'boolean') return fc.constant(!value);
  if (value instanceof Date) return fc.constantFrom(new Date(0), new Date(-62135596800000), new Date(253402300799000), new Date(Date.now() + 86_400_000 * 3650));
  if (value instanceof Uint8Array) return bytesValues.map((b) => Buffer.from(b));
  if (Array.isArray(value)) return fc.oneof(fc.constant([]), fc.constant([...value, ...value]), pick.map((n) => Array(1 + (n % 3)).fill(value[0])));
  return fc.constant(undefined); // a message left out
}

function mutated(baseline: object, serialize: (v: unknown) => Buffer): fc.Arbitrary<Body | undefined> {
  const paths = leafPaths(baseline);
  const edit = fc.integer({ min: 0, max: paths.length - 1 }).chain((i) => {
    let current: any = baseline;
    for (const key of paths[i]) current = current?.[key];
    return brokenValue(current, fc.nat()).map((v) => ({ path: paths[i], value: v }));
  });
  return fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) => {
    const copy = structuredClone(baseline) as any;
    for (const { path, value } of edits) {
      let parent = copy;
      for (const key of path.slice(0, -1)) parent = parent?.[key];
      if (parent && typeof parent === 'object') parent[path.at(-1)!] = value;
    }
    try {
      return new Body(serialize(copy));
    } catch {
      return undefined; // not encodable (e.g. an int64 field given "NaN"): nothing to send
    }
  });
}

// --- the system under test ---

interface Target {
  service: string;
  method: string;
  path: string;
  address: () => string;
  streaming: boolean;
  definition: ServiceDefinition[string];
  input: DescMessage;
}

const services: { name: string; definition: ServiceDefinition; api: Record<string, any>; address: (sys: System) => string }[] = [
  { name: 'tapcredit.terminal.v1.TerminalService', definition: terminalApi.TerminalServiceService, api: terminalApi, address: (sys) => sys.terminals[0].address },
  { name: 'tapcredit.issuer.v1.IssuerService', definition: issuerApi.IssuerServiceService, api: issuerApi, address: (sys) => sys.issuer.address },
  { name: 'tapcredit.authorizer.v1.AuthorizerService', definition: authorizerApi.AuthorizerServiceService, api: authorizerApi, address: (sys) => sys.authorizer.address },
];

/** Row counts of every table of a database, in one query. */
async function rowCounts(db: Knex): Promise<string> {
  const tables: string[] = (await db('sqlite_master').where({ type: 'table' }).whereNot('name', 'like', 'sqlite_%').orderBy('name').select('name')).map((r: any) => r.name);
  const [row] = await db.select(tables.map((t) => db.raw('(SELECT COUNT(*) FROM ??) AS ??', [t, t])));
  return JSON.stringify(row);
}

describe('bad input, property-based (fast-check)', function () {
  this.timeout(120_000);
  let sys: System;
  let clients: Map<string, Client>;
  let card: CardImage;
  let agreementId: string;
  let tapId: string;
  let deductionId: string;
  let snapshot: string;
  const answered: Record<string, number> = {};

  const state = async () => [await rowCounts(sys.authorizer.db), await rowCounts(sys.issuer.db), await rowCounts(sys.terminals[0].db)].join('\n');

  /** Waits until background work (outboxes, deny-list sync) stops changing the databases, and takes that as the new baseline. */
  async function settle(): Promise<void> {
    let previous = await state();
    for (let stable = 0; stable < 3; ) {
      await sleep(40);
      const now = await state();
      stable = now === previous ? stable + 1 : 0;
      previous = now;
    }
    snapshot = previous;
  }

  before(async () => {
    sys = await startSystem();
    const r = rider(1);
    await openAccount(sys, r);
    await openAccount(sys, rider(2));
    const enrolled = await enroll(sys, newCard(sys, 'C1'), r);
    agreementId = enrolled.card.creditFlag!.agreementId;
    const accepted = await tap(sys, enrolled.card);
    card = accepted.card!;
    tapId = accepted.tap!.tapId;
    deductionId = await waitFor(async () => (await sys.issuer.db('taps').where({ tap_id: tapId, state: 'SETTLED' }).first('deduction_id'))?.deduction_id);
    clients = new Map(services.map((s) => [s.name, new Client(s.address(sys), credentials.createInsecure())]));
    await settle();
  });
  after(async () => {
    for (const c of clients?.values() ?? []) c.close();
    await sys?.close();
  });

  /** Valid requests to start mutations from (RPCs without one get random and raw requests only). */
  function baselines(): Record<string, object> {
    const read = zeroAmountDebit(newCard(sys, 'C2'), { terminalId: 'phone', terminalSequence: 0n, terminalRandom: newTerminalRandom() });
    const later = zeroAmountDebit(card, { terminalId: 'T9', terminalSequence: 1n, terminalRandom: newTerminalRandom() });
    const holder = { name: 'Rider 2', phoneNumber: rider(2).phoneNumber };
    return {
      // The card's answer to READ: the first message of a PresentCard call.
      PresentCard: {
        answer: { status: CardStatus.CARD_STATUS_OK, read: { cardId: card.cardId, issuerCode: card.issuerCode, expiresOn: card.expiresOn, counter: card.counter, creditFlag: card.creditFlag } },
      },
      GetTerminalStatus: { unsentTapsLimit: 10 },
      EnrollCard: { requestId: 'fuzz-enroll', card: { issuerCode: card.issuerCode, expiresOn: card.expiresOn, proof: read.proof }, rider: holder, accountId: 'acc-2' },
      TapReport: {
        terminalId: 'T9',
        taps: [{ tapId: 'T9:1', terminalId: 'T9', terminalSequence: '1', cardId: 'C1', agreementId, fare: money(200), tappedAt: new Date(), proof: later.proof }],
      },
      Settle: { settlementId: 'fuzz-settlement', authorizerId: 'authorizer-1', items: [{ deductionId, tapId, amount: money(200) }], total: money(200) },
      GetCard: { cardId: 'C1' },
      ListCardTaps: { cardId: 'C1', pageSize: 10, pageToken: '' },
      GetReconciliationReport: { serviceDay: new Date().toISOString().slice(0, 10), pageSize: 10, pageToken: '' },
      ListDenyListChanges: { fromVersion: '0', pageSize: 10 },
      AddToDenyList: { cardId: 'C3', reason: 1 },
      RemoveFromDenyList: { cardId: 'C3', reason: 1 },
      UnenrollCard: { cardId: 'C1', accountId: 'acc-1' },
      ReportCardLost: { cardId: 'C1', accountId: 'acc-1' },
      RetryDebts: { cardId: 'C1' },
      OpenAccount: { accountId: 'acc-fuzz', holder, currencyCode: 'CNY', creditLimit: money(0) },
      TopUp: { requestId: 'fuzz-top-up', accountId: 'acc-2', amount: money(100) },
      SetAccountState: { accountId: 'acc-2', state: authorizerApi.AccountState.ACCOUNT_STATE_ACTIVE },
      GetAccount: { accountId: 'acc-1' },
      ListLedgerEntries: { accountId: 'acc-1', pageSize: 10, pageToken: '' },
      AuthorizeEnrollment: { requestId: 'fuzz-authorize', issuerId: ISSUER_ID, accountId: 'acc-2', rider: holder, cardId: 'C7' },
      Deduct: { issuerId: ISSUER_ID, items: [{ requestId: 'fuzz-deduct', agreementId, amount: money(200), tappedAt: new Date() }] },
      RevokeAgreement: { issuerId: ISSUER_ID, agreementId: 'agr-unknown' },
    };
  }

  /** The request as proto JSON, when it parses at all (for failure messages). */
  function describeBody(target: Target, body: Buffer): string {
    const type = services.find((s) => s.name === target.service)!.api[target.input.name];
    try {
      return JSON.stringify(type.toJSON(type.decode(body))).slice(0, 2000);
    } catch {
      return `${body.length} bytes that do not parse`;
    }
  }

  /** Sends raw bytes; resolves the status code and, for errors, the error. */
  function send(target: Target, body: Buffer): Promise<{ code: status; error?: ServiceError }> {
    const client = clients.get(target.service)!;
    // Generous: a busy CI machine can stall a call for seconds; a handler that hangs still shows up as DEADLINE_EXCEEDED.
    const deadline = Date.now() + 30_000;
    const identity = (b: Buffer) => b;
    return new Promise((resolve) => {
      if (!target.streaming) {
        client.makeUnaryRequest(target.path, identity, identity, body, { deadline }, (err) => resolve(err ? { code: err.code, error: err } : { code: status.OK }));
        return;
      }
      const settle = (err: ServiceError) => resolve({ code: err.code === status.CANCELLED ? status.OK : err.code, error: err.code === status.CANCELLED ? undefined : err });
      if (target.definition.requestStream) {
        // A session (PresentCard): the body is the first message, then our side closes; it ends with an outcome or an error.
        const session = client.makeBidiStreamRequest(target.path, identity, identity, { deadline });
        session.on('data', () => {});
        session.on('error', settle);
        session.on('status', (s: { code: status }) => s.code === status.OK && resolve({ code: status.OK }));
        session.write(body);
        session.end();
        return;
      }
      // A stream that stays open (a valid watch) is fine: we hang up after its first message.
      const call = client.makeServerStreamRequest(target.path, identity, identity, body, { deadline });
      call.on('data', () => call.cancel());
      call.on('error', settle);
      call.on('end', () => resolve({ code: status.OK }));
    });
  }

  async function check(target: Target, request: Body | undefined): Promise<void> {
    if (!request) return;
    const body = request.bytes;
    const { code, error } = await send(target, body);
    answered[status[code]] = (answered[status[code]] ?? 0) + 1;
    const shown = `${target.method} answered ${status[code]}: ${error?.details ?? ''}\n  to ${describeBody(target, body)}\n `;
    expect(FORBIDDEN.has(code), shown).to.equal(false);
    const readOnly = /^(Get|List|Watch)/.test(target.method);
    if (code === status.OK && !readOnly) {
      await settle(); // a valid request may change state, now and in the background
      return;
    }
    if (code !== status.OK) {
      const details = decodeErrorDetails(error!);
      expect(details.errorInfo?.reason, `${shown} (no ErrorInfo reason)`).to.match(/^[A-Z][A-Z0-9_]*$/);
      if (code === status.INVALID_ARGUMENT) expect(details.badRequest?.fieldViolations.length ?? 0, `${shown} (no field violations)`).to.be.greaterThan(0);
    }
    // A refused request, and any read, leaves every table as it was.
    const now = await state();
    if (now !== snapshot) {
      const changed = now;
      await settle(); // later checks start from the new state
      expect(changed, `${shown}, yet the row counts changed`).to.equal(snapshot);
    }
  }

  for (const s of services) {
    const service = registry.getService(s.name)!;
    for (const method of service.methods) {
      const target = (): Target => ({
        service: s.name,
        method: method.name,
        path: `/${s.name}/${method.name}`,
        address: () => s.address(sys),
        streaming: method.methodKind !== 'unary',
        definition: s.definition[method.localName],
        input: method.input,
      });
      it(`${service.name}.${method.name}: ${RUNS_PER_RPC} random and malformed requests`, async () => {
        const t = target();
        const baseline = baselines()[method.name];
        const serialize = (value: unknown) => t.definition.requestSerialize(s.api[t.input.name].fromPartial(value));
        const requests = fc.oneof(
          { weight: 4, arbitrary: messageWrites(t.input, 3).map(encodeWrites) },
          { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => new Body(Buffer.from(b))) },
          { weight: 1, arbitrary: fc.constant(new Body(randomBytes(0))) },
          ...(baseline ? [{ weight: 4, arbitrary: mutated(baseline, serialize) }] : []),
        );
        await fc.assert(
          fc.asyncProperty(requests, (body) => check(t, body)),
          { numRuns: RUNS_PER_RPC, endOnFailure: true },
        );
      });
    }
  }

  it('leaves every server SERVING and able to work', async () => {
    for (const [name, address] of [
      ['terminal', sys.terminals[0].address],
      ['issuer', sys.issuer.address],
      ['authorizer', sys.authorizer.address],
    ]) {
      const client = new Client(address, credentials.createInsecure());
      const serving = await new Promise<number>((resolve, reject) =>
        client.makeUnaryRequest(
          '/grpc.health.v1.Health/Check',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          { deadline: Date.now() + 5000 },
          (err, res) => (err ? reject(err) : resolve(res![1])), // HealthCheckResponse { status = 1 }: byte 0 is the tag, byte 1 the value
        ),
      );
      client.close();
      expect(serving, `${name} health`).to.equal(1);
    }
    const account = await callUnary(sys.authorizerClient, sys.authorizerClient.getAccount, { accountId: 'acc-1' });
    expect(account.account?.accountId).to.equal('acc-1');
    console.log(`      answers: ${JSON.stringify(answered)}`);
  });
});
