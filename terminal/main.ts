// Runs one terminal from flags / environment with local defaults.
import { join } from 'node:path';
import { DEFAULT_PORTS, dataDir, intSetting, setting } from '../common/config.js';
import { ensureDevKeys, loadMasterKey, loadPublicKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { onShutdownSignal } from '../common/server.js';
import { startTerminal } from './service.js';

const log = createLogger('terminal');
const dir = dataDir();
const terminalId = setting('terminal-id', 'TERMINAL_ID', 'T0001');
if (terminalId.includes(':')) throw new Error("TERMINAL_ID must not contain ':' (tap ids are <terminal id>:<sequence>)");

// Development keys are created on first run unless key files are given.
const needDevKeys = !process.env.TAPCREDIT_MASTER_KEY_FILE || !process.env.TAPCREDIT_ISSUER_PUBLIC_KEY_FILE;
const devKeys = needDevKeys ? ensureDevKeys(join(dir, 'keys')) : undefined;

const terminal = await startTerminal({
  terminalId,
  issuerCode: setting('issuer-code', 'ISSUER_CODE', 'CITY1'),
  databaseUrl: setting('database-url', 'TERMINAL_DATABASE_URL', join(dir, `terminal-${terminalId}.sqlite`)),
  host: setting('host', 'HOST', '127.0.0.1'),
  port: intSetting('port', 'TERMINAL_PORT', DEFAULT_PORTS.terminal),
  issuerAddress: setting('issuer-address', 'ISSUER_ADDRESS', `127.0.0.1:${DEFAULT_PORTS.issuer}`),
  masterKey: loadMasterKey(process.env.TAPCREDIT_MASTER_KEY_FILE ?? devKeys!.masterKeyFile),
  issuerPublicKey: loadPublicKey(process.env.TAPCREDIT_ISSUER_PUBLIC_KEY_FILE ?? devKeys!.publicKeyFile),
  fare: {
    minorUnits: String(intSetting('fare-minor-units', 'FARE_MINOR_UNITS', 200)),
    currencyCode: setting('currency', 'CURRENCY', 'CNY'),
  },
  forwardBatchSize: intSetting('forward-batch-size', 'FORWARD_BATCH_SIZE', 500),
  forwardIntervalMs: intSetting('forward-interval-ms', 'FORWARD_INTERVAL_MS', 200),
  log,
});
log.info({ address: terminal.address }, 'terminal ready');
onShutdownSignal(log, terminal.close);
