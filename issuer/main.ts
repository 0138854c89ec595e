// Runs the issuer from flags / environment with local defaults.
import { join } from 'node:path';
import { DEFAULT_PORTS, dataDir, intSetting, setting } from '../common/config.js';
import { ensureDevKeys, loadMasterKey, loadSigningKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { onShutdownSignal } from '../common/server.js';
import { startIssuer } from './service.js';

const log = createLogger('issuer');
const dir = dataDir();

// Development keys are created on first run unless key files are given.
const needDevKeys = !process.env.TAPCREDIT_MASTER_KEY_FILE || !process.env.TAPCREDIT_SIGNING_KEY_FILE;
const devKeys = needDevKeys ? ensureDevKeys(join(dir, 'keys')) : undefined;

const issuer = await startIssuer({
  issuerId: setting('issuer-id', 'ISSUER_ID', 'issuer-1'),
  issuerCode: setting('issuer-code', 'ISSUER_CODE', 'CITY1'),
  currencyCode: setting('currency', 'CURRENCY', 'CNY'),
  databaseUrl: setting('database-url', 'ISSUER_DATABASE_URL', join(dir, 'issuer.sqlite')),
  host: setting('host', 'HOST', '127.0.0.1'),
  port: intSetting('port', 'ISSUER_PORT', DEFAULT_PORTS.issuer),
  authorizerAddress: setting('authorizer-address', 'AUTHORIZER_ADDRESS', `127.0.0.1:${DEFAULT_PORTS.authorizer}`),
  masterKey: loadMasterKey(process.env.TAPCREDIT_MASTER_KEY_FILE ?? devKeys!.masterKeyFile),
  signingKey: loadSigningKey(process.env.TAPCREDIT_SIGNING_KEY_FILE ?? devKeys!.signingKeyFile),
  deductBatchSize: intSetting('deduct-batch-size', 'DEDUCT_BATCH_SIZE', 1000),
  deductIntervalMs: intSetting('deduct-interval-ms', 'DEDUCT_INTERVAL_MS', 200),
  log,
});
log.info({ address: issuer.address }, 'issuer ready');
onShutdownSignal(log, issuer.close);
