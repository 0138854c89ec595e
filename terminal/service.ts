// Starts a terminal (common/runner.ts): its store, the TerminalService server,
// the tap forwarder and the deny-list syncer. Defaults of what is left unset
// come from its settings table (settings.ts).
import type { KeyObject } from 'node:crypto';
import { createLogger, type Logger } from '../common/log.js';
import { channelTarget } from '../common/rpc.js';
import { runService, type RunningService } from '../common/runner.js';
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
import { TERMINAL_SETTINGS } from './settings.js';
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
  /** How long a card has to answer each reader command, in ms: the life of a challenge. */
  answerTimeoutMs?: number;
  /** How long after an accepted tap the card's presentation again may repeat it, free (see terminal/decision.ts repeatOf). */
  repeatWindowMs?: number;
  /** Follow the issuer's deny list (default true). */
  denyListSync?: boolean;
  /** Backoff bounds of the deny-list syncer after a broken stream (default 200 ms .. 5 s). */
  denyListMinBackoffMs?: number;
  denyListMaxBackoffMs?: number;
  /** Taps per TapReport call. Every optional setting left unset takes its default from TERMINAL_SETTINGS (settings.ts). */
  forwardBatchSize?: number;
  /** Poll interval of the forwarder when idle. */
  forwardIntervalMs?: number;
  /** Batching window of the forwarder: how long after a tap is accepted it waits for more to join the batch. */
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
  /** Time between database probes of the health check. */
  healthProbeIntervalMs?: number;
  log?: Logger;
  /** The terminal's clock, which stamps the taps (tests move it: a clock that jumps). */
  now?: () => Date;
  /** Test hook: ms each store commit is held, as a slow disk's fsync holds it. */
  commitDelayMs?: () => number;
}

export interface TerminalHandle extends RunningService {
  /** The terminal's store (its taps and deny list). */
  store: TerminalStore;
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
  const defaults = TERMINAL_SETTINGS;
  let store: TerminalStore | undefined;
  const service = await runService(
    {
      host: config.host,
      port: config.port,
      tls: config.tls,
      metricsPort: config.metricsPort,
      healthProbeIntervalMs: config.healthProbeIntervalMs ?? defaults.healthProbeIntervalMs.default,
      log,
      database: { url: config.databaseUrl, migrations: terminalMigrations, migrationsTable: 'terminal_migrations' },
    },
    async (db, storage) => {
      const repeatWindowMs = config.repeatWindowMs ?? defaults.repeatWindowMs.default;
      const taps = (store = await TerminalStore.open(db, { commitDelayMs: config.commitDelayMs, recentWindowMs: repeatWindowMs }));
      // issuerAddress may list several issuer replicas: calls go round robin over them.
      const { target, options } = channelTarget(config.issuerAddress);
      const issuerClient = new IssuerServiceClient(target, channelCredentials(config.tls, { role: 'issuer' }), {
        ...options,
        // grpc-js backs reconnects off up to 2 minutes by default; a terminal must
        // be back on the deny-list stream within seconds of the issuer's return.
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 5_000,
      });
      // Taps left unsent by an earlier run go out as soon as the terminal is up.
      const forwarder = createForwarder({
        store: taps,
        client: issuerClient,
        terminalId: config.terminalId,
        batchSize: config.forwardBatchSize ?? defaults.forwardBatchSize.default,
        intervalMs: config.forwardIntervalMs ?? defaults.forwardIntervalMs.default,
        windowMs: config.forwardWindowMs ?? defaults.forwardWindowMs.default,
        log,
      });
      const syncer = new DenyListSyncer({
        store: taps,
        client: issuerClient,
        terminalId: config.terminalId,
        minBackoffMs: config.denyListMinBackoffMs,
        maxBackoffMs: config.denyListMaxBackoffMs,
        log,
      });
      return {
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
              answerTimeoutMs: config.answerTimeoutMs ?? defaults.answerTimeoutMs.default,
              repeatWindowMs,
              denyListSyncedAt: () => syncer.syncedAt,
              store: taps,
              forwarder,
              storage,
              log,
              now: config.now,
            }),
          },
        ],
        metrics: terminalMetrics(db),
        // The forwarder stops after the server has closed, so taps being accepted are committed before the store closes.
        workers: [forwarder],
        streams: config.denyListSync ?? true ? [syncer] : [],
        release: () => issuerClient.close(),
      };
    },
  );
  return { ...service, store: store! };
}
