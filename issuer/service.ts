// Starts the issuer: its database, the IssuerService gRPC server and the
// debit outbox worker that sends RECEIVED taps to the credit authorizer.
import type { KeyObject } from 'node:crypto';
import { openDatabase, type Db } from '../common/db.js';
import { createLogger, type Logger } from '../common/log.js';
import { startServer } from '../common/server.js';
import { Worker } from '../common/worker.js';
import { IssuerServiceService } from '../gen/tapcredit/issuer/v1/issuer.js';
import { authorizerClient } from './authorizer-client.js';
import type { IssuerContext } from './context.js';
import { DEFAULT_DEDUCT_BATCH_SIZE, deductStep } from './deductions.js';
import { issuerHandlers } from './handlers.js';
import { MIGRATIONS_TABLE, migrations } from './migrations.js';

export interface IssuerConfig {
  issuerId: string;
  /** Issuer code printed in this issuer's cards. */
  issuerCode: string;
  /** Currency of fares, ISO 4217. */
  currencyCode: string;
  /** SQLite file path or postgres:// URL. */
  databaseUrl: string;
  host: string;
  port: number;
  /** host:port of the credit authorizer. */
  authorizerAddress: string;
  /** Card master key (verifies card proofs). */
  masterKey: Buffer;
  /** Ed25519 key that signs credit flags. */
  signingKey: KeyObject;
  /** Taps per Deduct call (default 1000). */
  deductBatchSize?: number;
  /** Poll interval of the debit worker when idle (default 200 ms). */
  deductIntervalMs?: number;
  log?: Logger;
}

export interface IssuerHandle {
  address: string;
  port: number;
  db: Db;
  /** Stops taking calls, stops the debit worker, closes the database. */
  close(): Promise<void>;
}

export async function startIssuer(config: IssuerConfig): Promise<IssuerHandle> {
  const log = config.log ?? createLogger('issuer');
  const db = await openDatabase({ url: config.databaseUrl, migrations, migrationsTable: MIGRATIONS_TABLE });
  const authorizer = authorizerClient(config.authorizerAddress);
  const ctx: IssuerContext = {
    db,
    issuerId: config.issuerId,
    issuerCode: config.issuerCode,
    currencyCode: config.currencyCode,
    masterKey: config.masterKey,
    signingKey: config.signingKey,
    authorizer,
    now: () => new Date(),
    log,
  };
  const batchSize = config.deductBatchSize ?? DEFAULT_DEDUCT_BATCH_SIZE;
  const deductWorker = new Worker(() => deductStep(ctx, batchSize), {
    name: 'deduct',
    intervalMs: config.deductIntervalMs ?? 200,
    log,
  });

  let server;
  try {
    server = await startServer({
      services: [
        {
          name: 'tapcredit.issuer.v1.IssuerService',
          definition: IssuerServiceService,
          implementation: issuerHandlers(ctx, log, () => deductWorker.kick()),
        },
      ],
      host: config.host,
      port: config.port,
      log,
    });
  } catch (err) {
    authorizer.close();
    await db.destroy();
    throw err;
  }
  // Taps left DEDUCTING by a crash are resent on the first step.
  deductWorker.start();

  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    db,
    close: () =>
      (closing ??= (async () => {
        await server.close();
        await deductWorker.stop();
        authorizer.close();
        await db.destroy();
      })()),
  };
}
