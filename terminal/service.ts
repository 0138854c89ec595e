// Starts a terminal: its store, the TerminalService server and the tap forwarder.
import type { KeyObject } from 'node:crypto';
import { credentials } from '@grpc/grpc-js';
import { openDatabase, type Db } from '../common/db.js';
import { createLogger, type Logger } from '../common/log.js';
import { startServer } from '../common/server.js';
import { Violations } from '../common/validate.js';
import { IssuerServiceClient } from '../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceService } from '../gen/tapcredit/terminal/v1/terminal.js';
import type { Money } from '../gen/tapcredit/type/v1/money.js';
import { createForwarder } from './forwarder.js';
import { terminalHandlers } from './handlers.js';
import { terminalMigrations } from './migrations.js';
import { TerminalStore } from './store.js';

export interface TerminalConfig {
  /** This terminal's id; no ':' (tap ids are "<terminal id>:<sequence>"). */
  terminalId: string;
  /** Code of the issuer whose cards this terminal takes. */
  issuerCode: string;
  /** SQLite file path or postgres:// URL. */
  databaseUrl: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** host:port of IssuerService, where taps are forwarded. */
  issuerAddress: string;
  /** The issuer master key, as the terminal's SAM holds it. */
  masterKey: Buffer;
  /** Verifies credit flags offline. */
  issuerPublicKey: KeyObject;
  /** Fare charged per ride at this terminal. */
  fare: Money;
  forwardBatchSize?: number;
  forwardIntervalMs?: number;
  log?: Logger;
}

export interface TerminalHandle {
  /** host:port the terminal listens on. */
  address: string;
  port: number;
  db: Db;
  /** Stops taking cards, lets in-flight calls finish, stops the forwarder and closes the store. */
  close(): Promise<void>;
}

function checkConfig(config: TerminalConfig): void {
  const v = new Violations();
  if (v.id('terminalId', config.terminalId) && config.terminalId.includes(':')) v.add('terminalId', "must not contain ':'");
  v.id('issuerCode', config.issuerCode);
  v.money('fare', config.fare, { positive: true });
  if (v.list.length > 0) throw new Error(`invalid terminal configuration: ${v.list.map((x) => `${x.field} ${x.description}`).join('; ')}`);
}

export async function startTerminal(config: TerminalConfig): Promise<TerminalHandle> {
  checkConfig(config);
  const log = (config.log ?? createLogger('terminal')).child({ terminalId: config.terminalId });
  const db = await openDatabase({ url: config.databaseUrl, migrations: terminalMigrations, migrationsTable: 'terminal_migrations' });
  const store = await TerminalStore.open(db);
  const issuerClient = new IssuerServiceClient(config.issuerAddress, credentials.createInsecure());
  const forwarder = createForwarder({
    store,
    client: issuerClient,
    terminalId: config.terminalId,
    batchSize: config.forwardBatchSize,
    intervalMs: config.forwardIntervalMs,
    log,
  });

  let server;
  try {
    server = await startServer({
      services: [
        {
          name: 'tapcredit.terminal.v1.TerminalService',
          definition: TerminalServiceService,
          implementation: terminalHandlers({
            terminalId: config.terminalId,
            issuerCode: config.issuerCode,
            masterKey: config.masterKey,
            issuerPublicKey: config.issuerPublicKey,
            fare: config.fare,
            store,
            forwarder,
            log,
          }),
        },
      ],
      host: config.host,
      port: config.port,
      log,
    });
  } catch (err) {
    issuerClient.close();
    await db.destroy();
    throw err;
  }
  // Taps left unsent by an earlier run go out as soon as the terminal is up.
  forwarder.start();

  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    db,
    close: () =>
      (closing ??= (async () => {
        // Close the server first, so taps being accepted are committed before the store closes.
        await server.close();
        await forwarder.stop();
        issuerClient.close();
        await db.destroy();
      })()),
  };
}
