// The contract states which request fields are REQUIRED
// (google.api.field_behavior); this holds the servers to it. Every unary RPC
// of every service gets an empty request: it must be refused
// INVALID_ARGUMENT with one field violation per REQUIRED field and none for
// any other field, and an RPC with no REQUIRED field must not be refused for
// want of fields.
import { credentials, makeGenericClientConstructor, status, type Client, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { decodeErrorDetails } from '../common/errors.js';
import { AuthorizerServiceService } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceService } from '../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceService } from '../gen/tapcredit/terminal/v1/terminal.js';
import { FieldBehavior, requestFieldBehaviors } from '../scripts/descriptors.js';
import { startSystem, type System } from './helpers/system.js';

/** The service's methods, sending an empty message whatever the request. */
function emptyRequestClient(service: ServiceDefinition, address: string): Client & Record<string, Function> {
  const methods = Object.fromEntries(Object.entries(service).map(([name, m]) => [name, { ...m, requestSerialize: () => Buffer.alloc(0) }]));
  const Ctor = makeGenericClientConstructor(methods as ServiceDefinition, 'Probe');
  return new Ctor(address, credentials.createInsecure()) as never;
}

async function violatedFields(client: Client & Record<string, Function>, method: string): Promise<{ code: number; fields: string[] }> {
  return new Promise((resolve) => {
    client[method]({}, (err: ServiceError | null) => {
      if (!err) return resolve({ code: status.OK, fields: [] });
      const fields = (decodeErrorDetails(err).badRequest?.fieldViolations ?? []).map((v) => v.field.split(/[.[]/)[0]);
      resolve({ code: err.code, fields: [...new Set(fields)].sort() });
    });
  });
}

describe('REQUIRED fields (google.api.field_behavior) are what the servers require', function () {
  this.timeout(60_000);
  let sys: System;
  before(async () => {
    sys = await startSystem();
  });
  after(() => sys.close());

  const services = () =>
    [
      ['tapcredit.issuer.v1.IssuerService', IssuerServiceService, sys.issuer.address],
      ['tapcredit.authorizer.v1.AuthorizerService', AuthorizerServiceService, sys.authorizer.address],
      ['tapcredit.terminal.v1.TerminalService', TerminalServiceService, sys.terminals[0].address],
    ] as const;

  it('an empty request is refused naming exactly the REQUIRED fields of its message', async () => {
    const behaviors = requestFieldBehaviors();
    const mismatches: string[] = [];
    for (const [serviceName, service, address] of services()) {
      const client = emptyRequestClient(service as unknown as ServiceDefinition, address);
      try {
        for (const [method, def] of Object.entries(service)) {
          if (def.requestStream || def.responseStream) continue;
          const rpc = `${serviceName}/${def.path.split('/').pop()}`;
          const required = Object.entries(behaviors.get(rpc) ?? {})
            .filter(([, b]) => b.includes(FieldBehavior.REQUIRED))
            .map(([f]) => f)
            .sort();
          const got = await violatedFields(client, method);
          const expected = required.length ? { code: status.INVALID_ARGUMENT, fields: required } : undefined;
          if (expected ? JSON.stringify(got) !== JSON.stringify(expected) : got.code === status.INVALID_ARGUMENT) {
            mismatches.push(`${rpc}: REQUIRED ${JSON.stringify(required)}, refused ${status[got.code]} naming ${JSON.stringify(got.fields)}`);
          }
        }
      } finally {
        client.close();
      }
    }
    expect(mismatches).to.deep.equal([]);
  });
});
