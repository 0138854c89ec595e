// A service as an operating-system process (each main.ts): paths and
// transport from its settings, graceful stop on SIGTERM/SIGINT, and the
// message that tells a launching parent (common/launcher.ts) where it really
// listens.
import { resolve, join } from 'node:path';
import { createLogger, type Logger } from './log.js';
import { onShutdownSignal } from './server.js';
import { chooseTransport, type TlsConfig } from './tls.js';

/** What a server sends its parent over the IPC channel once it serves. */
export interface ReadyMessage {
  type: 'tapcredit.ready';
  name: string;
  address: string;
  metricsAddress?: string;
}

export const isReadyMessage = (m: unknown): m is ReadyMessage => typeof m === 'object' && m !== null && (m as ReadyMessage).type === 'tapcredit.ready';

interface PathSettings {
  dataDir: string;
  certsDir?: string;
}

export const dataDirOf = (s: PathSettings) => resolve(s.dataDir);
export const certsDirOf = (s: PathSettings) => resolve(s.certsDir ?? join(dataDirOf(s), 'certs'));
/** A file setting, else its default under the data directory. */
export const fileOr = (s: PathSettings, file: string | undefined, ...underDataDir: string[]) => resolve(file ?? join(dataDirOf(s), ...underDataDir));

/** mTLS from the TLS settings (files default to <certs dir>/<identityFile>.pem/.key), or plaintext with --insecure on loopback only. */
export function transportOf(
  s: PathSettings & { host: string; insecure: boolean; tlsCa?: string; tlsCert?: string; tlsKey?: string },
  identityFile: string,
  peerAddresses: string[],
): TlsConfig | undefined {
  const certs = certsDirOf(s);
  return chooseTransport({
    insecure: s.insecure,
    listenHost: s.host,
    peerAddresses,
    files: {
      ca: s.tlsCa ?? join(certs, 'ca.pem'),
      cert: s.tlsCert ?? join(certs, `${identityFile}.pem`),
      key: s.tlsKey ?? join(certs, `${identityFile}.key`),
    },
  });
}

/**
 * Runs one server as this process: builds it with start(log), logs and
 * reports where it listens, and stops it gracefully on the first SIGTERM or
 * SIGINT (also one that comes while it starts). A failed start ends the
 * process with its reason (exit code 1).
 */
export async function runProcess(
  name: string,
  logLevel: string,
  start: (log: Logger) => Promise<{ address: string; metricsAddress?: string; close(): Promise<void> }>,
): Promise<void> {
  const log = createLogger(name, undefined, logLevel);
  const shutdown = onShutdownSignal(log);
  let server;
  try {
    server = await start(log);
  } catch (err) {
    log.fatal({ err }, `${name} failed to start`);
    process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  log.info({ address: server.address, metricsAddress: server.metricsAddress }, `${name} ready`);
  if (process.send) {
    const ready: ReadyMessage = { type: 'tapcredit.ready', name, address: server.address, metricsAddress: server.metricsAddress };
    process.send(ready);
    // The channel must not keep the process alive, nor stop it when the parent goes.
    process.channel?.unref();
  }
  shutdown.started(server.close);
}
