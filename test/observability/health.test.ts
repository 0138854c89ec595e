// Health follows the database: each server probes it (`select 1`) and turns
// NOT_SERVING while it cannot be reached, then SERVING again when it returns.
// The database is PostgreSQL behind a TCP proxy that the test cuts, as a
// network partition or a database restart would.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { credentials, makeGenericClientConstructor, type Client } from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import knexFactory from 'knex';
import { startAuthorizer } from '../../authorizer/service.js';
import { startIssuer } from '../../issuer/service.js';
import { startTerminal } from '../../terminal/service.js';
import { captureLogs } from '../helpers/logs.js';
import { CuttableProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/assert.js';

// The machine's PostgreSQL (CI sets the URL; a developer machine has the same default).
const POSTGRES_URL = process.env.TAPCREDIT_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const HealthClient = makeGenericClientConstructor(healthService, 'Health');

async function healthOf(address: string, serviceName = ''): Promise<string> {
  const client = new HealthClient(address, credentials.createInsecure()) as unknown as Client & {
    check(req: { service: string }, cb: (err: Error | null, res: { status: string | number }) => void): void;
  };
  try {
    return await new Promise((resolve, reject) =>
      client.check({ service: serviceName }, (err, res) => (err ? reject(err) : resolve(String(res.status)))),
    );
  } finally {
    client.close();
  }
}

async function metricValue(address: string, name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

interface Started {
  address: string;
  metricsAddress?: string;
  close(): Promise<void>;
}

const masterKey = randomBytes(32);
const { privateKey: signingKey, publicKey: issuerPublicKey } = generateKeyPairSync('ed25519');
const common = { host: '127.0.0.1', port: 0, metricsPort: 0, healthProbeIntervalMs: 50 };
const starters: Record<string, [string, string, (databaseUrl: string, log: ReturnType<typeof captureLogs>['log']) => Promise<Started>]> = {
  terminal: [
    'tapcredit.terminal.v1.TerminalService',
    'tapcredit_terminal_unsent_taps',
    (databaseUrl, log) =>
      startTerminal({ ...common, terminalId: 'T1', issuerCode: 'CITY1', databaseUrl, issuerAddress: '127.0.0.1:1', masterKey, issuerPublicKey, fare: { currencyCode: 'CNY', minorUnits: '200' }, log }),
  ],
  issuer: [
    'tapcredit.issuer.v1.IssuerService',
    'tapcredit_issuer_taps_awaiting_debit',
    (databaseUrl, log) =>
      startIssuer({ ...common, issuerId: 'issuer-1', issuerCode: 'CITY1', currencyCode: 'CNY', databaseUrl, authorizerAddress: '127.0.0.1:1', masterKey, signingKey, log }),
  ],
  authorizer: ['tapcredit.authorizer.v1.AuthorizerService', 'tapcredit_authorizer_unsettled_debits', (databaseUrl, log) => startAuthorizer({ ...common, authorizerId: 'authorizer-1', databaseUrl, issuers: {}, log })],
};

describe('health follows the database', function () {
  const admin = knexFactory({ client: 'pg', connection: POSTGRES_URL, pool: { min: 0, max: 1 } });
  after(() => admin.destroy());

  for (const [name, [serviceName, outboxGauge, start]] of Object.entries(starters)) {
    it(`${name}: NOT_SERVING while PostgreSQL is unreachable, SERVING again when it returns`, async () => {
      const database = `tapcredit_health_${randomBytes(4).toString('hex')}`;
      await admin.raw(`CREATE DATABASE ${database}`);
      const target = new URL(POSTGRES_URL);
      const proxy = new CuttableProxy(target.hostname, Number(target.port || 5432));
      await proxy.open();
      const viaProxy = new URL(POSTGRES_URL);
      viaProxy.host = `127.0.0.1:${proxy.port}`;
      viaProxy.pathname = `/${database}`;
      const logs = captureLogs();
      const server = await start(viaProxy.toString(), logs.log);
      try {
        expect(await healthOf(server.address)).to.equal('SERVING');
        expect(await healthOf(server.address, serviceName)).to.equal('SERVING');
        expect(await metricValue(server.metricsAddress!, outboxGauge)).to.equal(0);

        await proxy.cut();
        await waitFor(async () => (await healthOf(server.address)) === 'NOT_SERVING');
        expect(await healthOf(server.address, serviceName)).to.equal('NOT_SERVING');
        expect(await metricValue(server.metricsAddress!, 'tapcredit_database_up')).to.equal(0);
        // Outbox gauges read from the database are unknown (NaN) rather than stale.
        expect(await metricValue(server.metricsAddress!, outboxGauge)).to.be.NaN;
        expect(logs.lines().some((l) => l.msg === 'database unreachable; health is NOT_SERVING')).to.equal(true);

        await proxy.open();
        await waitFor(async () => (await healthOf(server.address)) === 'SERVING');
        expect(await healthOf(server.address, serviceName)).to.equal('SERVING');
        expect(await metricValue(server.metricsAddress!, 'tapcredit_database_up')).to.equal(1);
        expect(await metricValue(server.metricsAddress!, outboxGauge)).to.equal(0);
      } finally {
        await server.close();
        await proxy.cut();
        await admin.raw(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      }
    });
  }
});
