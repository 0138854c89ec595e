// The settings tables (common/settings.ts, each service's settings.ts): a
// flag wins over its variable, which wins over the default; bad values and
// unknown flags are refused with the setting's name; docs/configuration.md is
// generated from the tables and every main.ts reads only its table.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { AUTHORIZER_SETTINGS } from '../authorizer/settings.js';
import { ISSUER_SETTINGS } from '../issuer/settings.js';
import { TERMINAL_SETTINGS } from '../terminal/settings.js';
import { readSettings, SettingsError } from '../common/settings.js';
import { renderConfigDoc } from '../scripts/gen-config-docs.js';
import { START_SETTINGS, startPorts } from '../scripts/start-settings.js';

const root = join(import.meta.dirname, '..');

describe('settings tables', () => {
  it('take a flag over its variable, the variable over the default; an empty variable is unset', () => {
    const s = readSettings('issuer', ISSUER_SETTINGS, ['--port', '6001', '--insecure'], { ISSUER_PORT: '7001', DEDUCT_WINDOW_MS: '5', HOST: '', REPLICA_ID: 'r2' });
    expect(s.port).to.equal(6001);
    expect(s.deductWindowMs).to.equal(5);
    expect(s.host).to.equal('127.0.0.1');
    expect(s.replicaId).to.equal('r2');
    expect(s.insecure).to.equal(true);
    expect(s.deductConcurrency).to.equal(2);
    expect(s.databaseUrl).to.equal(undefined);
    expect(readSettings('issuer', ISSUER_SETTINGS, ['--port=6002'], {}).port).to.equal(6002);
  });

  it('refuse a value of the wrong kind, an unknown flag and a stray argument, naming the setting', () => {
    const refused = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      try {
        readSettings('terminal', TERMINAL_SETTINGS, argv, env);
      } catch (err) {
        expect(err).to.be.instanceOf(SettingsError);
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(refused(['--forward-batch-size', '1.5'])).to.equal('--forward-batch-size / FORWARD_BATCH_SIZE must be an integer, got "1.5"');
    expect(refused([], { TERMINAL_METRICS_PORT: 'x' })).to.equal('--metrics-port / TERMINAL_METRICS_PORT must be an integer, got "x"');
    expect(refused(['--no-such-flag'])).to.include("unknown option '--no-such-flag'");
    expect(refused(['stray'])).to.include('too many arguments');
    // --insecure is never taken from the environment.
    expect(readSettings('terminal', TERMINAL_SETTINGS, [], { INSECURE: '1', TAPCREDIT_INSECURE: '1' }).insecure).to.equal(false);
  });

  it('give each flag and each variable one meaning per service', () => {
    for (const table of [ISSUER_SETTINGS, AUTHORIZER_SETTINGS, TERMINAL_SETTINGS, START_SETTINGS]) {
      const flags = Object.values(table).flatMap((s) => (s.flag ? [s.flag] : []));
      const envs = Object.values(table).flatMap((s) => (s.env ? [s.env] : []));
      expect(new Set(flags).size).to.equal(flags.length);
      expect(new Set(envs).size).to.equal(envs.length);
    }
  });

  it('npm start: a port base moves every port, a port of its own wins', () => {
    const read = (argv: string[], env: NodeJS.ProcessEnv = {}) => startPorts(readSettings('start', START_SETTINGS, argv, env));
    expect(read([])).to.deep.equal({ terminal: { grpc: 50051, metrics: 9451 }, issuer: { grpc: 50052, metrics: 9452 }, authorizer: { grpc: 50053, metrics: 9453 } });
    expect(read(['--port-base', '61000', '--issuer-port', '62000'])).to.deep.equal({
      terminal: { grpc: 61001, metrics: 61011 },
      issuer: { grpc: 62000, metrics: 61012 },
      authorizer: { grpc: 61003, metrics: 61013 },
    });
    expect(() => read(['--port-base', '65530'])).to.throw('no room');
    expect(() => read([], { TAPCREDIT_PORT_BASE: 'high' })).to.throw('must be a port number');
  });

  it('are the source of docs/configuration.md, which documents every variable the servers read', () => {
    const doc = renderConfigDoc();
    expect(readFileSync(join(root, 'docs', 'configuration.md'), 'utf8')).to.equal(doc);
    for (const env of ['HEALTH_PROBE_INTERVAL_MS', 'TAPCREDIT_TLS_CERT', 'TAPCREDIT_TLS_CA', 'TAPCREDIT_TLS_KEY', 'LOG_LEVEL', 'TAPCREDIT_HOLDER_KEY_FILE', 'ISSUER_DENY_LIST_POLL_MS', 'TAPCREDIT_PORT_BASE']) {
      expect(doc, env).to.include(`\`${env}\``);
    }
    const out = execFileSync(process.execPath, ['--import', 'tsx', 'scripts/gen-config-docs.ts', '--check'], { cwd: root, encoding: 'utf8' });
    expect(out).to.include('up to date');
  });

  it('are all a main.ts reads: no main.ts looks at the environment itself', () => {
    for (const service of ['issuer', 'authorizer', 'terminal']) {
      const source = readFileSync(join(root, service, 'main.ts'), 'utf8');
      expect(source, `${service}/main.ts`).to.not.include('process.env');
      expect(source, `${service}/main.ts`).to.include('processSettings(');
    }
  });
});
