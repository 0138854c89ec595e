// `npm start`: builds, then runs the authorizer, the issuer and one terminal
// as three processes from dist/ (common/launcher.ts) on embedded SQLite under
// the data directory. Keys and development mTLS certificates are created
// there on first run, once, before any server starts. `--port-base N` (or
// per-service ports) moves every port, so two systems run side by side with
// their own data directories; it prints the addresses the servers report.
// `--insecure` runs them in plaintext on loopback. Ctrl-C stops all three.
import { join, resolve } from 'node:path';
import { SERVER_HEAP_MB } from '../common/config.js';
import { ServerProcess, prepareSharedFiles } from '../common/launcher.js';
import { DEV_PKI_DEFAULTS } from '../common/pki.js';
import { processSettings, type ServiceName } from '../common/settings.js';
import { START_SETTINGS, startPorts } from './start-settings.js';

const s = processSettings('start', START_SETTINGS);
const dir = resolve(s.dataDir);
let ports: ReturnType<typeof startPorts>;
try {
  ports = startPorts(s);
} catch (err) {
  console.error(`start: ${(err as Error).message}`);
  process.exit(2);
}
// Peers dial by name: TLS server names may not be IP addresses (RFC 6066).
const peerHost = s.host === '127.0.0.1' ? 'localhost' : s.host;
const ids = {
  issuer: process.env.ISSUER_ID || DEV_PKI_DEFAULTS.issuerId,
  authorizer: process.env.AUTHORIZER_ID || DEV_PKI_DEFAULTS.authorizerId,
  terminal: process.env.TERMINAL_ID || DEV_PKI_DEFAULTS.terminalIds[0],
};
const shared = await prepareSharedFiles(dir, s.insecure ? undefined : { issuerId: ids.issuer, authorizerId: ids.authorizer, terminalIds: [ids.terminal] });
if (shared.written.length > 0) console.log(`created development certificates in ${shared.certsDir} (npm run certs)`);

const peer = (service: ServiceName) => `${peerHost}:${ports[service].grpc}`;
const peers: Record<ServiceName, string[]> = {
  authorizer: ['--issuer-addresses', `${ids.issuer}=${peer('issuer')}`],
  issuer: ['--authorizer-address', peer('authorizer')],
  terminal: ['--issuer-address', peer('issuer')],
};
const order: ServiceName[] = ['authorizer', 'issuer', 'terminal'];
const servers = order.map(
  (service) =>
    new ServerProcess(
      {
        name: service,
        entry: `${service}/main`,
        args: [
          '--host', s.host,
          '--port', String(ports[service].grpc),
          '--metrics-port', String(ports[service].metrics),
          '--data-dir', dir,
          ...peers[service],
          ...(s.insecure ? ['--insecure'] : []),
        ],
        env: shared.env,
        nodeArgs: [`--max-old-space-size=${SERVER_HEAP_MB}`],
        output: 'inherit',
      },
      (exit) => {
        // Ctrl-C reaches the servers too (one process group): exits while stopping are expected.
        if (stopping) return;
        console.error(`${exit.name} exited (${exit.signal ?? exit.code}); stopping the others`);
        void stopAll(1);
      },
    ),
);

let stopping = false;
async function stopAll(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await Promise.all(servers.map((server) => server.stop()));
  process.exit(code);
}
process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));

let ready;
try {
  ready = await Promise.all(servers.map((server) => server.start()));
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  await stopAll(1);
}
const at = Object.fromEntries(ready!.map((r) => [r.name, r])) as Record<ServiceName, (typeof ready & {})[number]>;
const certs = shared.certsDir;
console.log(`
tapcredit is running (data in ${dir}):
  terminal   ${at.terminal.address}  tapcredit.terminal.v1.TerminalService (terminal ${ids.terminal})  metrics http://${at.terminal.metricsAddress}/metrics
  issuer     ${at.issuer.address}  tapcredit.issuer.v1.IssuerService  metrics http://${at.issuer.metricsAddress}/metrics
  authorizer ${at.authorizer.address}  tapcredit.authorizer.v1.AuthorizerService  metrics http://${at.authorizer.metricsAddress}/metrics
Ops scripts: TAPCREDIT_DATA_DIR=${dir} TERMINAL_ADDRESS=${at.terminal.address} ISSUER_ADDRESS=${at.issuer.address} AUTHORIZER_ADDRESS=${at.authorizer.address} scripts/ops/health.sh, ... (see scripts/ops/README.md)
${
  s.insecure || !certs
    ? `Plaintext (--insecure), no access control.
Try: npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://${at.issuer.address}`
    : `mTLS: clients need a certificate of the CA in ${certs} (ops.pem for administration, phone.pem for the phone app).
Try: npx buf curl --protocol grpc --cacert ${join(certs, 'ca.pem')} --cert ${join(certs, 'ops.pem')} --key ${join(certs, 'ops.key')} --list-methods https://${peer('issuer')}`
}
Ctrl-C stops all three.
`);
