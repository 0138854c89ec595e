// `npm start`: runs the authorizer, the issuer and one terminal as three
// processes on embedded SQLite under ./data, with development keys created
// on first run, and prints where they listen. Ctrl-C stops all three.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { Client } from '@grpc/grpc-js';
import { DEFAULT_PORTS, dataDir } from '../common/config.js';
import { ensureDevKeys } from '../common/keys.js';

const root = new URL('..', import.meta.url).pathname;
const dir = dataDir();
const keys = ensureDevKeys(join(dir, 'keys'));
const host = process.env.HOST ?? '127.0.0.1';

const env = {
  ...process.env,
  TAPCREDIT_DATA_DIR: dir,
  TAPCREDIT_MASTER_KEY_FILE: keys.masterKeyFile,
  TAPCREDIT_SIGNING_KEY_FILE: keys.signingKeyFile,
  TAPCREDIT_ISSUER_PUBLIC_KEY_FILE: keys.publicKeyFile,
  AUTHORIZER_ADDRESS: `${host}:${DEFAULT_PORTS.authorizer}`,
  ISSUER_ADDRESS: `${host}:${DEFAULT_PORTS.issuer}`,
  ISSUER_ADDRESSES: `issuer-1=${host}:${DEFAULT_PORTS.issuer}`,
};

const services = [
  { name: 'authorizer', port: DEFAULT_PORTS.authorizer },
  { name: 'issuer', port: DEFAULT_PORTS.issuer },
  { name: 'terminal', port: DEFAULT_PORTS.terminal },
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
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, s.name, 'main.ts')], {
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

async function waitListening(port: number): Promise<void> {
  const client = new Client(`${host}:${port}`, credentials.createInsecure());
  try {
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 60_000, (err) => (err ? reject(new Error(`nothing listening on ${host}:${port}`)) : resolve())),
    );
  } finally {
    client.close();
  }
}

await Promise.all(services.map((s) => waitListening(s.port)));
console.log(`
tapcredit is running (data in ${dir}):
  terminal   ${host}:${DEFAULT_PORTS.terminal}  tapcredit.terminal.v1.TerminalService (terminal T0001)
  issuer     ${host}:${DEFAULT_PORTS.issuer}  tapcredit.issuer.v1.IssuerService
  authorizer ${host}:${DEFAULT_PORTS.authorizer}  tapcredit.authorizer.v1.AuthorizerService
Try: npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://${host}:${DEFAULT_PORTS.issuer}
Ctrl-C stops all three.
`);
