// One terminal as a process: `node dist/terminal/main.js [flags]`. Every
// setting is a flag or an environment variable (settings.ts,
// docs/configuration.md).
import { identityFile } from '../common/identity.js';
import { loadMasterKey, loadPublicKey } from '../common/keys.js';
import { fileOr, runProcess, transportOf } from '../common/process.js';
import { splitAddresses } from '../common/rpc.js';
import { processSettings } from '../common/settings.js';
import { startTerminal } from './service.js';
import { TERMINAL_SETTINGS } from './settings.js';
import { fareForLine, parseTariff, readTariffFile } from './tariff.js';

const s = processSettings('terminal', TERMINAL_SETTINGS);
await runProcess('terminal', s.logLevel, (log) => {
  if (s.terminalId.includes(':')) throw new Error("TERMINAL_ID must not contain ':' (tap ids are <terminal id>:<sequence>)");
  // The fare: the tariff's fare of this terminal's line, else the flat fare.
  const tariff = s.tariffFile ? readTariffFile(s.tariffFile) : s.tariff ? parseTariff(s.tariff) : undefined;
  if (tariff && !s.line) throw new Error('a tariff is configured: set TERMINAL_LINE (--line) to the line this terminal serves');
  const fare = tariff ? fareForLine(tariff, s.line!) : { minorUnits: String(s.fareMinorUnits), currencyCode: s.currency };
  return startTerminal({
    terminalId: s.terminalId,
    issuerCode: s.issuerCode,
    databaseUrl: s.databaseUrl ?? fileOr(s, undefined, `terminal-${s.terminalId}.sqlite`),
    host: s.host,
    port: s.port,
    metricsPort: s.metricsPort,
    healthProbeIntervalMs: s.healthProbeIntervalMs,
    issuerAddress: s.issuerAddress,
    // mTLS with this terminal's certificate; plaintext only with --insecure, on loopback.
    tls: transportOf(s, identityFile('terminal', s.terminalId), splitAddresses(s.issuerAddress)),
    // Keys are read, never created here.
    masterKey: loadMasterKey(fileOr(s, s.masterKeyFile, 'keys', 'master.key'), s.masterKey),
    issuerPublicKey: loadPublicKey(fileOr(s, s.issuerPublicKeyFile, 'keys', 'issuer-public.pem')),
    fare,
    lineId: s.line,
    answerTimeoutMs: s.answerTimeoutMs,
    repeatWindowMs: s.repeatWindowMs,
    forwardBatchSize: s.forwardBatchSize,
    forwardIntervalMs: s.forwardIntervalMs,
    forwardWindowMs: s.forwardWindowMs,
    log,
  });
});
