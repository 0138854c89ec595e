// Starts a terminal: its store, the TerminalService server and the tap forwarder.
import type { KeyObject } from 'node:crypto';
import { openDatabase, type Db } from '../common/db.js';
import { createLogger, type Logger } from '../common/log.js';
import { channelTarget } from '../common/rpc.js';
import { startServer } from '../common/server.js';
import { assertOwnIdentity, channelCredentials, type TlsConfig } from '../common/tls.js';
import { Violations } from '../common/validate.js';
import { IssuerServiceClient } from '../gen/tapcredit/issuer/v1/issuer.js';
import { TerminalServiceService } from '../gen/tapcredit/terminal/v1/terminal.js';
import type { Money } from '../gen/tapcredit/type/v1/money.js';
import { DenyListSyncer } from './deny-list-sync.js';
import { createForwarder } from './forwarder.js';
import { terminalHandlers } from './handlers.js';
import { terminalMetrics } from './metrics.js';
import { terminalMigrations } from './migrations.js';
import { terminalPolicy } from './policy.js';
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
  /** host:port of IssuerService, where taps are forwarded; several comma-separated for issuer replicas (see common/rpc.ts channelTarget). */
  issuerAddress: string;
  /** The issuer master key, as the terminal's SAM holds it. */
  masterKey: Buffer;
  /** Verifies credit flags offline. */
  issuerPublicKey: KeyObject;
  /** Fare charged per ride at this terminal (the tariff's fare of its line). */
  fare: Money;
  /** Line or route the terminal serves; recorded on each tap. */
  lineId?: string;
  /** How long a card has to answer each reader command, in ms (default 5000): the life of a challenge. */
  answerTimeoutMs?: number;
  /** Follow the issuer's deny list (default true). */
  denyListSync?: boolean;
  /** Backoff bounds of the deny-list syncer after a broken stream (default 200 ms .. 5 s). */
  denyListMinBackoffMs?: number;
  denyListMaxBackoffMs?: number;
  /** Taps per TapReport call (default 500). */
  forwardBatchSize?: number;
  /** Poll interval of the forwarder when idle (default 200 ms). */
  forwardIntervalMs?: number;
  /** Batching window of the forwarder: how long after a tap is accepted it waits for more to join the batch (default 0). */
  forwardWindowMs?: number;
  /**
   * mTLS with this terminal's certificate (its identity must be
   * spiffe://tapcredit/terminal/<terminalId>): the server requires client
   * certificates and enforces terminal/policy.ts; the forwarder presents it
   * to the issuer. Plaintext and no authorization when unset.
   */
  tls?: TlsConfig;
  /** Port of the HTTP /metrics listener (0 picks a free one); no listener when unset. */
  metricsPort?: number;
  /** Time between database probes of the health check (default 2000 ms). */
  healthProbeIntervalMs?: number;
  log?: Logger;
}

export interface TerminalHandle {
  /** host:port the terminal listens on. */
  address: string;
  port: number;
  /** host:port of the HTTP /metrics listener, when metricsPort was given. */
  metricsAddress?: string;
  db: Db;
  /** The terminal's store (its taps and deny list). */
  store: TerminalStore;
  /** Stops taking cards, lets in-flight calls finish, stops the forwarder and closes the store. */
  close(): Promise<void>;
}

function checkConfig(config: TerminalConfig): void {
  const v = new Violations();
  if (v.id('terminalId', config.terminalId) && config.terminalId.includes(':')) v.add('terminalId', "must not contain ':'");
  v.id('issuerCode', config.issuerCode);
  v.money('fare', config.fare, { positive: true });
  if (config.lineId !== undefined && config.lineId !== '') v.id('lineId', config.lineId);
  if (v.list.length > 0) throw new Error(`invalid terminal configuration: ${v.list.map((x) => `${x.field} ${x.description}`).join('; ')}`);
}

export async function startTerminal(config: TerminalConfig): Promise<TerminalHandle> {
  checkConfig(config);
  if (config.tls) assertOwnIdentity(config.tls, 'terminal', config.terminalId);
  const log = (config.log ?? createLogger('terminal')).child({ terminalId: config.terminalId });
  const db = await openDatabase({ url: config.databaseUrl, migrations: terminalMigrations, migrationsTable: 'terminal_migrations', log });
  const store = await TerminalStore.open(db);
  // issuerAddress may list several issuer replicas: calls go round robin over them.
  const { target, options } = channelTarget(config.issuerAddress);
  const issuerClient = new IssuerServiceClient(target, channelCredentials(config.tls, { role: 'issuer' }), {
    ...options,
    // grpc-js backs reconnects off up to 2 minutes by default; a terminal must
    // be back on the deny-list stream within seconds of the issuer's return.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 5_000,
  });
  const forwarder = createForwarder({
    store,
    client: issuerClient,
    terminalId: config.terminalId,
    batchSize: config.forwardBatchSize,
    intervalMs: config.forwardIntervalMs,
    windowMs: config.forwardWindowMs,
    log,
  });
  const syncer = new DenyListSyncer({
    store,
    client: issuerClient,
    terminalId: config.terminalId,
    minBackoffMs: config.denyListMinBackoffMs,
    maxBackoffMs: config.denyListMaxBackoffMs,
    log,
  });

  let server;
  try {
    server = await startServer({
      services: [
        {
          name: 'tapcredit.terminal.v1.TerminalService',
          definition: TerminalServiceService,
          policy: terminalPolicy,
          implementation: terminalHandlers({
            terminalId: config.terminalId,
            issuerCode: config.issuerCode,
            masterKey: config.masterKey,
            issuerPublicKey: config.issuerPublicKey,
            fare: config.fare,
            lineId: config.lineId || undefined,
            answerTimeoutMs: config.answerTimeoutMs,
            denyListSyncedAt: () => syncer.syncedAt,
            store,
            forwarder,
            log,
          }),
        },
      ],
      host: config.host,
      port: config.port,
      tls: config.tls,
      metrics: terminalMetrics(db),
      metricsPort: config.metricsPort,
      // Health is NOT_SERVING while the database does not answer.
      readiness: { check: () => db.raw('select 1'), intervalMs: config.healthProbeIntervalMs },
      log,
    });
  } catch (err) {
    issuerClient.close();
    await db.destroy();
    throw err;
  }
  // Taps left unsent by an earlier run go out as soon as the terminal is up.
  forwarder.start();
  if (config.denyListSync ?? true) syncer.start();

  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    metricsAddress: server.metricsAddress,
    db,
    store,
    close: () =>
      (closing ??= (async () => {
        // Close the server first, so taps being accepted are committed before the store closes.
        await syncer.stop();
        await server.close();
        await forwarder.stop();
        issuerClient.close();
        await db.destroy();
      })()),
  };
}
