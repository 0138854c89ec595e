// Each compiled server on its own, as an operator or a container runs it
// (node dist/<service>/main.js) through the launcher: it reports the port it
// really took, answers health, stops gracefully on SIGTERM; it refuses to
// start without keys (and creates none), and stops at once on a bad setting.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { credentials, makeGenericClientConstructor, type Client } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { ServerProcess, prepareSharedFiles } from '../../common/launcher.js';
import { removeDir, tempDir } from '../helpers/assert.js';
import { ROOT, ensureBuilt } from '../helpers/build.js';

const HealthClient = makeGenericClientConstructor(healthService, 'Health');

/** Runs a compiled entry point to its end. */
function runDist(entry: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [join(ROOT, 'dist', `${entry}.js`), ...args], { cwd: ROOT, timeout: 60_000, env: { ...process.env, LOG_LEVEL: 'silent', ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    ),
  );
}

describe('compiled servers, one at a time (dist/)', function () {
  this.timeout(300_000);
  const dirs: string[] = [];
  const dir = () => {
    const d = tempDir('tapcredit-dist-');
    dirs.push(d);
    return d;
  };
  before(() => ensureBuilt());
  after(() => dirs.forEach(removeDir));

  for (const service of ['issuer', 'authorizer', 'terminal'] as const) {
    it(`${service}: reports the port it took, serves health, exits 0 on SIGTERM`, async () => {
      const data = dir();
      const shared = await prepareSharedFiles(data);
      const server = new ServerProcess({
        name: service,
        entry: `${service}/main`,
        runtime: 'dist',
        args: ['--port', '0', '--metrics-port', '0', '--insecure', '--data-dir', data],
        env: { ...shared.env, LOG_LEVEL: 'warn' },
        output: { logDir: join(data, 'logs') },
      });
      const ready = await server.start();
      expect(ready.address).to.match(/^127\.0\.0\.1:\d+$/);
      expect(ready.address).to.not.equal('127.0.0.1:0');
      expect(ready.metricsAddress).to.match(/^127\.0\.0\.1:\d+$/);
      const health = new HealthClient(ready.address, credentials.createInsecure()) as unknown as Client & {
        check(req: { service: string }, cb: (err: Error | null, res: { status: string | number }) => void): void;
      };
      try {
        const answer = await new Promise<{ status: string | number }>((resolve, reject) => health.check({ service: '' }, (err, res) => (err ? reject(err) : resolve(res))));
        expect(String(answer.status)).to.be.oneOf(['SERVING', '1']);
      } finally {
        health.close();
      }
      expect((await server.signal('SIGTERM')).code).to.equal(0);
    });
  }

  it('a server without its keys refuses to start, says how to make them, and creates none', async () => {
    const data = dir();
    const result = await runDist('issuer/main', ['--port', '0', '--metrics-port', '0', '--insecure', '--data-dir', data]);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.include('no master key at').and.include('npm run keys');
    expect(existsSync(join(data, 'keys'))).to.equal(false);
  });

  it('a bad setting stops the server at once with the reason (exit code 2)', async () => {
    const bad = await runDist('authorizer/main', ['--port', 'fifty']);
    expect(bad).to.deep.include({ code: 2 });
    expect(bad.stderr).to.equal('authorizer: --port / AUTHORIZER_PORT must be an integer, got "fifty"\n');
    const unknown = await runDist('terminal/main', ['--prot', '50051']);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.include("unknown option '--prot'");
    const fromEnv = await runDist('issuer/main', [], { DEDUCT_WINDOW_MS: '5x' });
    expect(fromEnv.stderr).to.include('--deduct-window-ms / DEDUCT_WINDOW_MS must be an integer');
  });

  it('--help lists every setting with its variable and default', async () => {
    const help = await runDist('issuer/main', ['--help']);
    expect(help.code).to.equal(0);
    // commander wraps the lines: compare with the whitespace folded.
    expect(help.stdout.replace(/\s+/g, ' ')).to.include('--health-probe-interval-ms <value>').and.include('[env HEALTH_PROBE_INTERVAL_MS]').and.include('[env TAPCREDIT_TLS_CERT]').and.include('(default: 50)');
  });

  it('npm run keys makes every key once; a second run keeps them', async () => {
    const data = dir();
    const first = await runDist('scripts/keys', ['init', '--data-dir', data]);
    expect(first.code, first.stderr).to.equal(0);
    for (const file of ['master.key', 'issuer-signing.pem', 'issuer-public.pem', 'authorizer-holder.key']) expect(existsSync(join(data, 'keys', file)), file).to.equal(true);
    const { readFileSync } = await import('node:fs');
    const before = readFileSync(join(data, 'keys', 'master.key'), 'utf8');
    await runDist('scripts/keys', ['init', '--data-dir', data]);
    expect(readFileSync(join(data, 'keys', 'master.key'), 'utf8')).to.equal(before);
  });
});

describe("README: one server on its own (scale-out section)", function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => {
    await ensureBuilt();
    dir = tempDir('tapcredit-one-');
  });
  after(() => removeDir(dir));

  it('keys init, certs, then the issuer from dist/ over mTLS on the given database (free ports instead of 50052/9452)', async () => {
    const { POSTGRES_URL, testDatabases } = await import('../helpers/databases.js');
    const databases = testDatabases(POSTGRES_URL ? 'postgres' : 'sqlite', dir);
    try {
      expect((await runDist('scripts/keys', ['init', '--data-dir', dir])).code).to.equal(0);
      expect((await runDist('scripts/certs', ['--certs-dir', join(dir, 'certs')])).code).to.equal(0);
      const server = new ServerProcess({
        name: 'issuer-a',
        entry: 'issuer/main',
        runtime: 'dist',
        args: ['--data-dir', dir, '--port', '0', '--metrics-port', '0', '--replica-id', 'issuer-a', '--database-url', await databases.url('issuer'), '--authorizer-address', '10.0.0.7:50053'],
        env: { LOG_LEVEL: 'warn' },
        output: { logDir: join(dir, 'logs') },
      });
      const ready = await server.start();
      expect(ready.address).to.match(/^127\.0\.0\.1:\d+$/);
      expect((await server.signal('SIGTERM')).code).to.equal(0);
    } finally {
      await databases.drop();
    }
  });
});
