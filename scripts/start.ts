// `npm start`: runs the authorizer, the issuer and one terminal as three
// processes on embedded SQLite under ./data, with development keys and mTLS
// certificates (data/certs, see `npm run certs`) created on first run, and
// prints where they listen. `npm start -- --insecure` runs them in plaintext
// on loopback instead. Ctrl-C stops all three.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Client, credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { DEFAULT_METRICS_PORTS, DEFAULT_PORTS, SERVER_HEAP_MB, booleanFlag, dataDir } from '../common/config.js';
import type { Role } from '../common/identity.js';
import { ensureDevKeys } from '../common/keys.js';
import { DEV_PKI_DEFAULTS, ensureDevPki } from '../common/pki.js';
import { certsDir, clientCredentials, loadTls } from '../common/tls.js';

const root = new URL('..', import.meta.url).pathname;
const dir = dataDir();
const keys = ensureDevKeys(join(dir, 'keys'));
const host = process.env.HOST ?? '127.0.0.1';
// Peers dial by name: TLS server names may not be IP addresses (RFC 6066).
const peerHost = host === '127.0.0.1' ? 'localhost' : host;
const insecure = booleanFlag('insecure');
const certs = certsDir();
if (!insecure) {
  const written = await ensureDevPki(certs, {
    issuerId: process.env.ISSUER_ID ?? DEV_PKI_DEFAULTS.issuerId,
    authorizerId: process.env.AUTHORIZER_ID ?? DEV_PKI_DEFAULTS.authorizerId,
    terminalIds: [process.env.TERMINAL_ID ?? DEV_PKI_DEFAULTS.terminalIds[0]],
  });
  if (written.length > 0) console.log(`created development certificates in ${certs} (npm run certs)`);
}
// The ops identity checks that each server is up (over mTLS, so a bad certificate setup shows here).
const ops = insecure ? undefined : loadTls({ ca: join(certs, 'ca.pem'), cert: join(certs, 'ops.pem'), key: join(certs, 'ops.key') });
const credentialsFor = (role: Role): ChannelCredentials => (ops ? clientCredentials(ops, { role }) : credentials.createInsecure());

const env = {
  ...process.env,
  TAPCREDIT_DATA_DIR: dir,
  TAPCREDIT_CERTS_DIR: certs,
  TAPCREDIT_MASTER_KEY_FILE: keys.masterKeyFile,
  TAPCREDIT_SIGNING_KEY_FILE: keys.signingKeyFile,
  TAPCREDIT_ISSUER_PUBLIC_KEY_FILE: keys.publicKeyFile,
  AUTHORIZER_ADDRESS: `${peerHost}:${DEFAULT_PORTS.authorizer}`,
  ISSUER_ADDRESS: `${peerHost}:${DEFAULT_PORTS.issuer}`,
  ISSUER_ADDRESSES: `issuer-1=${peerHost}:${DEFAULT_PORTS.issuer}`,
};

const services = [
  { name: 'authorizer' as const, port: DEFAULT_PORTS.authorizer },
  { name: 'issuer' as const, port: DEFAULT_PORTS.issuer },
  { name: 'terminal' as const, port: DEFAULT_PORTS.terminal },
];

const children: ChildProcess[] = [];
let stopping = false;

function stopAll(code: number) {
  if (stopping) return;
  stopping = true;
  for (const child of children) child.kill('SIGTERM');
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r))))).then(() =>
    process.exit(code),
  );
}

for (const s of services) {
  const child = spawn(process.execPath, [`--max-old-space-size=${SERVER_HEAP_MB}`, '--import', 'tsx', join(root, s.name, 'main.ts'), ...(insecure ? ['--insecure'] : [])], {
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  child.once('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${s.name} exited (${signal ?? code}); stopping the others`);
      stopAll(1);
    }
  });
  children.push(child);
}
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

async function waitListening(port: number, role: Role): Promise<void> {
  const client = new Client(`${peerHost}:${port}`, credentialsFor(role));
  try {
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 60_000, (err) => (err ? reject(new Error(`nothing listening on ${host}:${port}`)) : resolve())),
    );
  } finally {
    client.close();
  }
}

await Promise.all(services.map((s) => waitListening(s.port, s.name)));
console.log(`
tapcredit is running (data in ${dir}):
  terminal   ${host}:${DEFAULT_PORTS.terminal}  tapcredit.terminal.v1.TerminalService (terminal T0001)
  issuer     ${host}:${DEFAULT_PORTS.issuer}  tapcredit.issuer.v1.IssuerService
  authorizer ${host}:${DEFAULT_PORTS.authorizer}  tapcredit.authorizer.v1.AuthorizerService
Metrics: http://${host}:${DEFAULT_METRICS_PORTS.terminal}/metrics (terminal), :${DEFAULT_METRICS_PORTS.issuer} (issuer), :${DEFAULT_METRICS_PORTS.authorizer} (authorizer)
Ops scripts: scripts/ops/health.sh, scripts/ops/card.sh CARD_ID, ... (see scripts/ops/README.md)
${
  insecure
    ? `Plaintext (--insecure), no access control.
Try: npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://${host}:${DEFAULT_PORTS.issuer}`
    : `mTLS: clients need a certificate of the CA in ${certs} (ops.pem for administration, phone.pem for the phone app).
Try: npx buf curl --protocol grpc --cacert ${join(certs, 'ca.pem')} --cert ${join(certs, 'ops.pem')} --key ${join(certs, 'ops.key')} --list-methods https://localhost:${DEFAULT_PORTS.issuer}`
}
Ctrl-C stops all three.
`);
