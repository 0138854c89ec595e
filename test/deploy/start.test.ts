// `npm start` as an operator runs it, twice at once: two systems on different
// port bases and data directories, each complete (three servers from dist/,
// their own keys and certificates), each printing the gRPC and metrics
// addresses its servers report, and one ride settled through each.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import { loadMasterKey } from '../../common/keys.js';
import { accepts, freePorts } from '../../common/ports.js';
import { callUnary } from '../../common/rpc.js';
import { channelCredentials, loadTls } from '../../common/tls.js';
import { AuthorizerServiceClient } from '../../gen/tapcredit/authorizer/v1/authorizer.js';
import { expectGrpcError, removeDir, tempDir } from '../helpers/assert.js';
import { rideThrough } from '../helpers/ride.js';

const root = join(import.meta.dirname, '..', '..');

interface Started {
  npm: ChildProcess;
  output: () => string;
  addresses: Record<'terminal' | 'issuer' | 'authorizer', { grpc: string; metrics: string }>;
}

/** `npm start -- args` in its own process group (as a shell runs it), until it prints that it is running. */
function npmStart(args: string[], timeoutMs = 180_000): Promise<Started> {
  const npm = spawn('npm', ['start', '--silent', '--', ...args], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let out = '';
  npm.stdout!.on('data', (d) => (out += d));
  npm.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not come up within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    npm.once('exit', (code) => reject(new Error(`npm start exited (${code}):\n${out}`)));
    npm.stdout!.on('data', () => {
      if (!out.includes('Ctrl-C stops all three.')) return;
      clearTimeout(timer);
      const line = (name: string) => new RegExp(`^\\s+${name}\\s+(\\S+)\\s.*metrics http://(\\S+)/metrics$`, 'm').exec(out);
      const addresses = Object.fromEntries(
        (['terminal', 'issuer', 'authorizer'] as const).map((name) => {
          const m = line(name);
          if (!m) throw new Error(`no ${name} line in:\n${out}`);
          return [name, { grpc: m[1], metrics: m[2] }];
        }),
      ) as Started['addresses'];
      resolve({ npm, output: () => out, addresses });
    });
  });
}

/** Ctrl-C: SIGINT to the whole process group, as a terminal sends it; resolves once npm has exited. */
async function ctrlC(s: Started): Promise<void> {
  if (s.npm.exitCode !== null || s.npm.signalCode !== null) return;
  const exited = new Promise((resolve) => s.npm.once('exit', resolve));
  process.kill(-s.npm.pid!, 'SIGINT');
  await exited;
}

/** A port base with its 13 ports above it free a moment ago. */
async function freePortBase(avoid: number[]): Promise<number> {
  for (;;) {
    const [probe] = await freePorts(1);
    const base = probe - 20;
    const wanted = Array.from({ length: 13 }, (_, i) => base + i + 1);
    if (base < 1024 || wanted.some((p) => avoid.some((a) => Math.abs(a - p) < 20))) continue;
    if (await allFree(wanted)) return base;
  }
}

async function allFree(ports: number[]): Promise<boolean> {
  const { createServer } = await import('node:net');
  const servers = ports.map(() => createServer());
  const results = await Promise.all(
    servers.map((srv, i) => new Promise<boolean>((resolve) => {
      srv.once('error', () => resolve(false));
      srv.listen(ports[i], '127.0.0.1', () => resolve(true));
    })),
  );
  await Promise.all(servers.map((srv) => new Promise((r) => (srv.listening ? srv.close(r) : r(undefined)))));
  return results.every(Boolean);
}

describe('npm start: two systems side by side', function () {
  this.timeout(600_000);
  const dirs = [tempDir('tapcredit-start-a-'), tempDir('tapcredit-start-b-')];
  const systems: Started[] = [];

  after(async () => {
    for (const s of systems) await ctrlC(s);
    for (const d of dirs) removeDir(d);
  });

  it('runs both complete on their own port bases, prints the addresses they use, and settles a ride through each', async () => {
    const baseA = await freePortBase([]);
    const baseB = await freePortBase([baseA]);
    // One after the other: the second's build finds dist/ up to date.
    systems.push(await npmStart(['--port-base', String(baseA), '--data-dir', dirs[0]]));
    systems.push(await npmStart(['--port-base', String(baseB), '--data-dir', dirs[1]]));

    for (const [i, base] of [baseA, baseB].entries()) {
      const { addresses } = systems[i];
      expect(addresses).to.deep.equal({
        terminal: { grpc: `127.0.0.1:${base + 1}`, metrics: `127.0.0.1:${base + 11}` },
        issuer: { grpc: `127.0.0.1:${base + 2}`, metrics: `127.0.0.1:${base + 12}` },
        authorizer: { grpc: `127.0.0.1:${base + 3}`, metrics: `127.0.0.1:${base + 13}` },
      });
      for (const { metrics } of Object.values(addresses)) {
        const res = await fetch(`http://${metrics}/metrics`);
        expect(res.status, metrics).to.equal(200);
        expect(await res.text()).to.include('# TYPE');
      }
    }

    const names = ['side-a', 'side-b'];
    for (const [i, dir] of dirs.entries()) {
      const certs = join(dir, 'certs');
      const tls = (file: string) => loadTls({ ca: join(certs, 'ca.pem'), cert: join(certs, `${file}.pem`), key: join(certs, `${file}.key`) });
      const { addresses } = systems[i];
      // TLS server names may not be IP addresses (RFC 6066): dial loopback by name.
      const byName = (address: string) => address.replace(/^127\.0\.0\.1:/, 'localhost:');
      const ride = await rideThrough(
        {
          terminal: byName(addresses.terminal.grpc),
          issuer: byName(addresses.issuer.grpc),
          authorizer: byName(addresses.authorizer.grpc),
          masterKey: loadMasterKey(join(dir, 'keys', 'master.key')),
          issuerCode: 'CITY1',
          currency: 'CNY',
          ops: tls('ops'),
          phone: tls('phone'),
        },
        names[i],
        200n,
      );
      expect(ride.state).to.equal('TAP_STATE_SETTLED');
      expect(ride.tapId).to.match(/^T0001:/);
    }

    // Two systems, not one: each authorizer knows only its own rider.
    const certsA = join(dirs[0], 'certs');
    const opsA = loadTls({ ca: join(certsA, 'ca.pem'), cert: join(certsA, 'ops.pem'), key: join(certsA, 'ops.key') });
    const authorizerA = new AuthorizerServiceClient(systems[0].addresses.authorizer.grpc.replace('127.0.0.1', 'localhost'), channelCredentials(opsA, { role: 'authorizer' }));
    try {
      await callUnary(authorizerA, authorizerA.getAccount, { accountId: `acc-${names[0]}` });
      await expectGrpcError(callUnary(authorizerA, authorizerA.getAccount, { accountId: `acc-${names[1]}` }), status.NOT_FOUND);
    } finally {
      authorizerA.close();
    }

    // Ctrl-C stops each system: no server is left listening.
    for (const s of systems.splice(0)) {
      await ctrlC(s);
      for (const [name, { grpc, metrics }] of Object.entries(s.addresses)) {
        for (const address of [grpc, metrics]) expect(await accepts(Number(address.split(':')[1])), `${name} at ${address} after Ctrl-C`).to.equal(false);
      }
    }
  });
});
