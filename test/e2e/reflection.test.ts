// Every server answers server reflection and health, so grpcurl and buf curl
// work with no proto files at hand (including messages with well-known types).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { enroll, openAccount, rider } from '../helpers/rider.js';
import { newCard, startSystem, type System } from '../helpers/system.js';

const run = promisify(execFile);
const BUF = new URL('../../node_modules/.bin/buf', import.meta.url).pathname;

async function bufCurl(address: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args.slice(0, -1), `http://${address}${args.at(-1)}`]);
  return stdout;
}

describe('server reflection and health (buf curl)', function () {
  this.timeout(60_000);
  let sys: System;
  before(async () => {
    sys = await startSystem();
    const r = rider(1);
    await openAccount(sys, r, 5000n);
    await enroll(sys, newCard(sys, 'C1'), r);
  });
  after(async () => {
    await sys.close();
  });

  const servers = () => [
    { address: sys.authorizer.address, service: 'tapcredit.authorizer.v1.AuthorizerService' },
    { address: sys.issuer.address, service: 'tapcredit.issuer.v1.IssuerService' },
    { address: sys.terminals[0].address, service: 'tapcredit.terminal.v1.TerminalService' },
  ];

  it('lists each server\'s service, health and reflection', async () => {
    for (const s of servers()) {
      const services = (await bufCurl(s.address, '--list-services', '')).split('\n').filter(Boolean);
      expect(services).to.include.members([s.service, 'grpc.health.v1.Health']);
      const methods = await bufCurl(s.address, '--list-methods', '');
      expect(methods).to.contain(`${s.service}/`);
    }
  });

  it('reports SERVING for every server', async () => {
    for (const s of servers()) {
      const out = JSON.parse(await bufCurl(s.address, '-d', JSON.stringify({ service: s.service }), '/grpc.health.v1.Health/Check'));
      expect(out.status).to.equal('SERVING');
    }
  });

  it('calls an RPC by name with JSON on each server, timestamps and int64 included', async () => {
    const account = JSON.parse(await bufCurl(sys.authorizer.address, '-d', '{"accountId":"acc-1"}', '/tapcredit.authorizer.v1.AuthorizerService/GetAccount'));
    expect(account.account.balance).to.deep.equal({ currencyCode: 'CNY', minorUnits: '5000' });
    expect(account.account.openedAt).to.match(/^\d{4}-\d\d-\d\dT/);

    const card = JSON.parse(await bufCurl(sys.issuer.address, '-d', '{"cardId":"C1"}', '/tapcredit.issuer.v1.IssuerService/GetCard'));
    expect(card.card.state).to.equal('CARD_STATE_ENROLLED');
    expect(card.card.enrollment.enrolledAt).to.match(/^\d{4}-\d\d-\d\dT/);

    const terminal = JSON.parse(await bufCurl(sys.terminals[0].address, '-d', '{}', '/tapcredit.terminal.v1.TerminalService/GetTerminalStatus'));
    expect(terminal.terminalId).to.equal('T1');
  });
});
