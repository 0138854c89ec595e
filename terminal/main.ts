// Runs one terminal from flags / environment with local defaults.
import { join } from 'node:path';
import { DEFAULT_METRICS_PORTS, DEFAULT_PORTS, dataDir, intSetting, setting } from '../common/config.js';
import { ensureDevKeys, loadMasterKey, loadPublicKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { identityFile } from '../common/identity.js';
import { onShutdownSignal } from '../common/server.js';
import { splitAddresses } from '../common/rpc.js';
import { transportFromSettings } from '../common/tls.js';
import { startTerminal } from './service.js';
import { fareForLine, parseTariff, readTariffFile } from './tariff.js';

const log = createLogger('terminal');
const dir = dataDir();
const terminalId = setting('terminal-id', 'TERMINAL_ID', 'T0001');
if (terminalId.includes(':')) throw new Error("TERMINAL_ID must not contain ':' (tap ids are <terminal id>:<sequence>)");

// Development keys are created on first run unless key files are given.
const needDevKeys = !process.env.TAPCREDIT_MASTER_KEY_FILE || !process.env.TAPCREDIT_ISSUER_PUBLIC_KEY_FILE;
const devKeys = needDevKeys ? ensureDevKeys(join(dir, 'keys')) : undefined;

const host = setting('host', 'HOST', '127.0.0.1');
const issuerAddress = setting('issuer-address', 'ISSUER_ADDRESS', `127.0.0.1:${DEFAULT_PORTS.issuer}`);
// mTLS with this terminal's certificate; plaintext only with --insecure, on loopback.
const tls = transportFromSettings(identityFile('terminal', terminalId), host, splitAddresses(issuerAddress));

// The fare: the tariff's fare of this terminal's line (TARIFF_FILE or TARIFF, with TERMINAL_LINE),
// else the flat FARE_MINOR_UNITS.
const lineId = setting('line', 'TERMINAL_LINE', '');
const tariffFile = setting('tariff-file', 'TARIFF_FILE', '');
const tariffText = setting('tariff', 'TARIFF', '');
const tariff = tariffFile ? readTariffFile(tariffFile) : tariffText ? parseTariff(tariffText) : undefined;
if (tariff && !lineId) throw new Error('a tariff is configured: set TERMINAL_LINE (--line) to the line this terminal serves');
const fare = tariff
  ? fareForLine(tariff, lineId)
  : { minorUnits: String(intSetting('fare-minor-units', 'FARE_MINOR_UNITS', 200)), currencyCode: setting('currency', 'CURRENCY', 'CNY') };

const shutdown = onShutdownSignal(log);
const terminal = await startTerminal({
  terminalId,
  issuerCode: setting('issuer-code', 'ISSUER_CODE', 'CITY1'),
  databaseUrl: setting('database-url', 'TERMINAL_DATABASE_URL', join(dir, `terminal-${terminalId}.sqlite`)),
  host,
  port: intSetting('port', 'TERMINAL_PORT', DEFAULT_PORTS.terminal),
  metricsPort: intSetting('metrics-port', 'TERMINAL_METRICS_PORT', DEFAULT_METRICS_PORTS.terminal),
  healthProbeIntervalMs: intSetting('health-probe-interval-ms', 'HEALTH_PROBE_INTERVAL_MS', 2000),
  issuerAddress,
  tls,
  masterKey: loadMasterKey(process.env.TAPCREDIT_MASTER_KEY_FILE ?? devKeys!.masterKeyFile),
  issuerPublicKey: loadPublicKey(process.env.TAPCREDIT_ISSUER_PUBLIC_KEY_FILE ?? devKeys!.publicKeyFile),
  fare,
  lineId: lineId || undefined,
  forwardBatchSize: intSetting('forward-batch-size', 'FORWARD_BATCH_SIZE', 500),
  forwardIntervalMs: intSetting('forward-interval-ms', 'FORWARD_INTERVAL_MS', 200),
  // 0: an accepted tap leaves for the issuer at once (a gate takes about a tap a second).
  forwardWindowMs: intSetting('forward-window-ms', 'FORWARD_WINDOW_MS', 0),
  log,
});
log.info({ address: terminal.address }, 'terminal ready');
shutdown.started(terminal.close);
