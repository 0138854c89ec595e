// Starts the whole system in-process for integration tests: authorizer,
// issuer and terminals on port 0, each with its own SQLite file in a fresh
// temp directory, fast outbox intervals, and generated clients to each.
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { credentials } from '@grpc/grpc-js';
import { removeDir, tempDir } from './assert.js';
import { testDatabases, type Backend } from './databases.js';
export { expectGrpcError, tableCounts, waitFor } from './assert.js';
import { startAuthorizer, type AuthorizerHandle } from '../../authorizer/service.js';
import { issueCard } from '../../common/card.js';
import { createLogger } from '../../common/log.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient } from '../../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { startIssuer, type IssuerHandle } from '../../issuer/service.js';
import { startTerminal, type TerminalHandle } from '../../terminal/service.js';

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
  authorizerClient: AuthorizerServiceClient;
  issuerClient: IssuerServiceClient;
  terminalClients: TerminalServiceClient[];
  close(): Promise<void>;
}

export async function startSystem(opts: { terminals?: number; backend?: Backend } = {}): Promise<System> {
  const dir = tempDir();
  const databases = testDatabases(opts.backend ?? 'sqlite', dir);
  const log = createLogger('test');
  const masterKey = randomBytes(32);
  const { privateKey: signingKey, publicKey: issuerPublicKey } = generateKeyPairSync('ed25519');

  const authorizer = await startAuthorizer({
    authorizerId: 'authorizer-1',
    databaseUrl: await databases.url('authorizer'),
    host: '127.0.0.1',
    port: 0,
    issuers: {},
    settlementIntervalMs: 20,
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
    log,
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
        log,
      }),
    );
  }
  const insecure = credentials.createInsecure();
  const authorizerClient = new AuthorizerServiceClient(authorizer.address, insecure);
  const issuerClient = new IssuerServiceClient(issuer.address, insecure);
  const terminalClients = terminals.map((t) => new TerminalServiceClient(t.address, insecure));
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
    async close() {
      for (const c of [authorizerClient, issuerClient, ...terminalClients]) c.close();
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

