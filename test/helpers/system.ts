// Starts the whole system in-process for integration tests: authorizer,
// issuer and terminals on port 0, each with its own SQLite file in a fresh
// temp directory, fast outbox intervals, and generated clients to each.
// With tls: true every server and client uses mTLS with certificates of a
// throwaway test CA, and the servers enforce their access policies.
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { removeDir, tempDir } from './assert.js';
import { testDatabases, type Backend } from './databases.js';
import { testTls } from './pki.js';
export { expectGrpcError, tableCounts, waitFor } from './assert.js';
import { startAuthorizer, type AuthorizerHandle } from '../../authorizer/service.js';
import { issueCard } from '../../common/card.js';
import type { Role } from '../../common/identity.js';
import { createLogger, type Logger } from '../../common/log.js';
import { channelCredentials, type TlsConfig } from '../../common/tls.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { startIssuer, type IssuerConfig, type IssuerHandle } from '../../issuer/service.js';
import { startTerminal, type TerminalConfig, type TerminalHandle } from '../../terminal/service.js';

export const ISSUER_ID = 'issuer-1';
export const ISSUER_CODE = 'CITY1';
export const CURRENCY = 'CNY';
export const FARE = 200n;

export const money = (minorUnits: bigint | number | string, currencyCode = CURRENCY) => ({
  currencyCode,
  minorUnits: String(minorUnits),
});

export interface System {
  dir: string;
  masterKey: Buffer;
  signingKey: KeyObject;
  issuerPublicKey: KeyObject;
  authorizer: AuthorizerHandle;
  issuer: IssuerHandle;
  terminals: TerminalHandle[];
  /** Clients with the ops identity (administration, reads). */
  authorizerClient: AuthorizerServiceClient;
  issuerClient: IssuerServiceClient;
  terminalClients: TerminalServiceClient[];
  /** Clients with the phone app's identity: enrollment at the issuer, taps at the terminals. */
  phone: { issuerClient: IssuerServiceClient; terminalClients: TerminalServiceClient[] };
  /** Set when started with tls: true. */
  tls?: { ops: TlsConfig; phone: TlsConfig };
  close(): Promise<void>;
}

export async function startSystem(
  opts: {
    terminals?: number;
    backend?: Backend;
    tls?: boolean;
    log?: Logger;
    metrics?: boolean;
    /** Extra issuer settings, e.g. a fare cap or a debt retry schedule. */
    issuer?: Partial<IssuerConfig>;
    /** Extra settings of terminal i (1-based), e.g. its line and fare. */
    terminal?: (i: number) => Partial<TerminalConfig>;
  } = {},
): Promise<System> {
  const dir = tempDir();
  const databases = testDatabases(opts.backend ?? 'sqlite', dir);
  // Quiet by default: warnings and errors only, unless LOG_LEVEL says otherwise.
  const log = opts.log ?? createLogger('test', undefined, process.env.LOG_LEVEL ?? 'warn');
  const tlsOf = (role: Role, name: string) => (opts.tls ? testTls(role, name) : Promise.resolve(undefined));
  const masterKey = randomBytes(32);
  const { privateKey: signingKey, publicKey: issuerPublicKey } = generateKeyPairSync('ed25519');

  const authorizer = await startAuthorizer({
    authorizerId: 'authorizer-1',
    databaseUrl: await databases.url('authorizer'),
    host: '127.0.0.1',
    port: 0,
    issuers: {},
    settlementIntervalMs: 20,
    tls: await tlsOf('authorizer', 'authorizer-1'),
    metricsPort: opts.metrics ? 0 : undefined,
    log,
  });
  const issuer = await startIssuer({
    issuerId: ISSUER_ID,
    issuerCode: ISSUER_CODE,
    currencyCode: CURRENCY,
    databaseUrl: await databases.url('issuer'),
    host: '127.0.0.1',
    port: 0,
    authorizerAddress: authorizer.address,
    masterKey,
    signingKey,
    deductIntervalMs: 20,
    tls: await tlsOf('issuer', ISSUER_ID),
    metricsPort: opts.metrics ? 0 : undefined,
    log,
    ...opts.issuer,
  });
  authorizer.setIssuerAddress(ISSUER_ID, issuer.address);
  const terminals: TerminalHandle[] = [];
  for (let i = 1; i <= (opts.terminals ?? 1); i++) {
    terminals.push(
      await startTerminal({
        terminalId: `T${i}`,
        issuerCode: ISSUER_CODE,
        databaseUrl: await databases.url(`terminal_t${i}`),
        host: '127.0.0.1',
        port: 0,
        issuerAddress: issuer.address,
        masterKey,
        issuerPublicKey,
        fare: money(FARE),
        forwardIntervalMs: 20,
        tls: await tlsOf('terminal', `T${i}`),
        metricsPort: opts.metrics ? 0 : undefined,
        log,
        ...opts.terminal?.(i),
      }),
    );
  }
  const ops = await tlsOf('ops', 'admin');
  const phoneTls = await tlsOf('phone', 'phone-app');
  const as = (tls: TlsConfig | undefined, role: Role): ChannelCredentials => channelCredentials(tls, { role });
  const authorizerClient = new AuthorizerServiceClient(authorizer.address, as(ops, 'authorizer'));
  const issuerClient = new IssuerServiceClient(issuer.address, as(ops, 'issuer'));
  const terminalClients = terminals.map((t) => new TerminalServiceClient(t.address, as(ops, 'terminal')));
  const phone = {
    issuerClient: new IssuerServiceClient(issuer.address, as(phoneTls, 'issuer')),
    terminalClients: terminals.map((t) => new TerminalServiceClient(t.address, as(phoneTls, 'terminal'))),
  };
  return {
    dir,
    masterKey,
    signingKey,
    issuerPublicKey,
    authorizer,
    issuer,
    terminals,
    authorizerClient,
    issuerClient,
    terminalClients,
    phone,
    tls: ops && phoneTls ? { ops, phone: phoneTls } : undefined,
    async close() {
      for (const c of [authorizerClient, issuerClient, ...terminalClients, phone.issuerClient, ...phone.terminalClients]) c.close();
      for (const t of terminals) await t.close();
      await issuer.close();
      await authorizer.close();
      await databases.drop();
      removeDir(dir);
    },
  };
}

/** A new personalized card of the test issuer, valid for years. */
export const newCard = (sys: System, cardId: string, expiresOn = '2099-12-31'): CardImage =>
  issueCard(sys.masterKey, { cardId, issuerCode: ISSUER_CODE, expiresOn });

