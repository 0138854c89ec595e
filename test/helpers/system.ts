// Starts the whole system in-process for integration tests: authorizer,
// issuer and terminals on port 0, each with its own SQLite file in a fresh
// temp directory, fast outbox intervals, and generated clients to each.
// With tls: true every server and client uses mTLS with certificates of a
// throwaway test CA, and the servers enforce their access policies. With
// replicas: n, n issuers and n authorizers share their service's database
// and every client lists all replicas of the service it calls.
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { removeDir, tempDir } from './assert.js';
import { testDatabases, type Backend } from './databases.js';
import { testTls } from './pki.js';
export { expectGrpcError, tableCounts, waitFor } from './assert.js';
import type { AuthorizerConfig, AuthorizerHandle } from '../../authorizer/service.js';
import { issueCard } from '../../common/card.js';
import type { Role } from '../../common/identity.js';
import { createLogger, type Logger } from '../../common/log.js';
import { channelTarget } from '../../common/rpc.js';
import { channelCredentials, type TlsConfig } from '../../common/tls.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import type { IssuerConfig, IssuerHandle } from '../../issuer/service.js';
import type { TerminalConfig, TerminalHandle } from '../../terminal/service.js';
import { serverModules } from './servers.js';

const { startAuthorizer, startIssuer, startTerminal } = await serverModules();

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
  /** The first replica of each (the only one unless started with replicas). */
  authorizer: AuthorizerHandle;
  issuer: IssuerHandle;
  /** Every replica, sharing one database per service. */
  authorizers: AuthorizerHandle[];
  issuers: IssuerHandle[];
  terminals: TerminalHandle[];
  /** Clients with the ops identity (administration, reads). */
  authorizerClient: AuthorizerServiceClient;
  issuerClient: IssuerServiceClient;
  terminalClients: TerminalServiceClient[];
  /** Clients with the phone app's identity: enrollment at the issuer, taps at the terminals. */
  phone: { issuerClient: IssuerServiceClient; terminalClients: TerminalServiceClient[]; authorizerClient: AuthorizerServiceClient };
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
    /** Extra authorizer settings, e.g. the settlement batch size. */
    authorizer?: Partial<AuthorizerConfig>;
    /** Extra settings of terminal i (1-based), e.g. its line and fare. */
    terminal?: (i: number) => Partial<TerminalConfig>;
    /**
     * Issuer and authorizer replicas (default 1): each service's replicas
     * share its database, and every client lists all of them (round robin).
     * Each replica logs with a `replica` field.
     */
    replicas?: number;
  } = {},
): Promise<System> {
  const dir = tempDir();
  const databases = testDatabases(opts.backend ?? 'sqlite', dir);
  // Quiet by default: warnings and errors only, unless LOG_LEVEL says otherwise.
  const log = opts.log ?? createLogger('test', undefined, process.env.LOG_LEVEL ?? 'warn');
  const tlsOf = (role: Role, name: string) => (opts.tls ? testTls(role, name) : Promise.resolve(undefined));
  const masterKey = randomBytes(32);
  const { privateKey: signingKey, publicKey: issuerPublicKey } = generateKeyPairSync('ed25519');

  const replicas = Array.from({ length: opts.replicas ?? 1 }, (_, i) => i + 1);
  const replicaLog = (n: number) => (replicas.length > 1 ? log.child({ replica: n }) : log);
  const authorizerUrl = await databases.url('authorizer');
  // Replicas of a service share its secrets: the holder key hashes what one replica stores and another checks.
  const holderKey = randomBytes(32);
  // Replicas start together, as a deployment's would: they migrate one database at once.
  const authorizers = await Promise.all(
    replicas.map(async (n) =>
      startAuthorizer({
        authorizerId: 'authorizer-1',
        databaseUrl: authorizerUrl,
        host: '127.0.0.1',
        port: 0,
        issuers: {},
        settlementIntervalMs: 20,
        tls: await tlsOf('authorizer', 'authorizer-1'),
        metricsPort: opts.metrics ? 0 : undefined,
        holderKey,
        replicaId: `authorizer-r${n}`,
        log: replicaLog(n),
        ...opts.authorizer,
      }),
    ),
  );
  const authorizer = authorizers[0];
  const issuerUrl = await databases.url('issuer');
  const issuers = await Promise.all(
    replicas.map(async (n) =>
      startIssuer({
        issuerId: ISSUER_ID,
        issuerCode: ISSUER_CODE,
        currencyCode: CURRENCY,
        databaseUrl: issuerUrl,
        host: '127.0.0.1',
        port: 0,
        authorizerAddress: authorizers.map((a) => a.address).join(','),
        masterKey,
        signingKey,
        deductIntervalMs: 20,
        tls: await tlsOf('issuer', ISSUER_ID),
        metricsPort: opts.metrics ? 0 : undefined,
        replicaId: `issuer-r${n}`,
        log: replicaLog(n),
        ...opts.issuer,
      }),
    ),
  );
  const issuer = issuers[0];
  const issuerAddresses = issuers.map((i) => i.address).join(',');
  for (const a of authorizers) a.setIssuerAddress(ISSUER_ID, issuerAddresses);
  const terminals: TerminalHandle[] = [];
  for (let i = 1; i <= (opts.terminals ?? 1); i++) {
    terminals.push(
      await startTerminal({
        terminalId: `T${i}`,
        issuerCode: ISSUER_CODE,
        databaseUrl: await databases.url(`terminal_t${i}`),
        host: '127.0.0.1',
        port: 0,
        issuerAddress: issuerAddresses,
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
  const toAuthorizers = channelTarget(authorizers.map((a) => a.address).join(','));
  const toIssuers = channelTarget(issuerAddresses);
  const authorizerClient = new AuthorizerServiceClient(toAuthorizers.target, as(ops, 'authorizer'), toAuthorizers.options);
  const issuerClient = new IssuerServiceClient(toIssuers.target, as(ops, 'issuer'), toIssuers.options);
  const terminalClients = terminals.map((t) => new TerminalServiceClient(t.address, as(ops, 'terminal')));
  const phone = {
    issuerClient: new IssuerServiceClient(toIssuers.target, as(phoneTls, 'issuer'), toIssuers.options),
    terminalClients: terminals.map((t) => new TerminalServiceClient(t.address, as(phoneTls, 'terminal'))),
    // Riders sign in here (SignIn) for the access tokens their rider calls carry.
    authorizerClient: new AuthorizerServiceClient(toAuthorizers.target, as(phoneTls, 'authorizer'), toAuthorizers.options),
  };
  return {
    dir,
    masterKey,
    signingKey,
    issuerPublicKey,
    authorizer,
    issuer,
    authorizers,
    issuers,
    terminals,
    authorizerClient,
    issuerClient,
    terminalClients,
    phone,
    tls: ops && phoneTls ? { ops, phone: phoneTls } : undefined,
    async close() {
      for (const c of [authorizerClient, issuerClient, ...terminalClients, phone.issuerClient, ...phone.terminalClients, phone.authorizerClient]) c.close();
      for (const t of terminals) await t.close();
      for (const i of issuers) await i.close();
      for (const a of authorizers) await a.close();
      await databases.drop();
      removeDir(dir);
    },
  };
}

/** A new personalized card of the test issuer, valid for years. */
export const newCard = (sys: System, cardId: string, expiresOn = '2099-12-31'): CardImage =>
  issueCard(sys.masterKey, { cardId, issuerCode: ISSUER_CODE, expiresOn });

