// deploy/compose.yaml and the Dockerfile, checked as far as a machine without
// a container engine can: the compose file parses, each server it runs is an
// entry point of the build, every flag and environment variable it sets is a
// setting of that server (a typo would leave a default in place unnoticed),
// and what the image keeps (production dependencies) is all the build imports.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import { expect } from 'chai';
import { parse } from 'yaml';
import { AUTHORIZER_SETTINGS } from '../../authorizer/settings.js';
import type { SettingsTable } from '../../common/settings.js';
import { ISSUER_SETTINGS } from '../../issuer/settings.js';
import { TERMINAL_SETTINGS } from '../../terminal/settings.js';
import { ROOT, ensureBuilt } from '../helpers/build.js';

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, unknown>;
}

const TABLES: Record<string, SettingsTable> = {
  'dist/issuer/main.js': ISSUER_SETTINGS,
  'dist/authorizer/main.js': AUTHORIZER_SETTINGS,
  'dist/terminal/main.js': TERMINAL_SETTINGS,
};

function jsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? jsFiles(path) : path.endsWith('.js') ? [path] : [];
  });
}

describe('deployment recipe: Dockerfile and deploy/compose.yaml', function () {
  this.timeout(300_000);
  const compose = parse(readFileSync(join(ROOT, 'deploy', 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
  const services = Object.entries(compose.services);
  const ours = services.filter(([, s]) => s.image === 'tapcredit:latest');

  before(() => ensureBuilt());

  it('runs 2 issuers and 2 authorizers on PostgreSQL, and terminals', () => {
    const running = (file: string) => ours.filter(([, s]) => s.command?.[1] === file);
    expect(running('dist/issuer/main.js')).to.have.length(2);
    expect(running('dist/authorizer/main.js')).to.have.length(2);
    expect(running('dist/terminal/main.js').length).to.be.at.least(1);
    for (const [name, s] of [...running('dist/issuer/main.js'), ...running('dist/authorizer/main.js')]) {
      expect(Object.values(s.environment ?? {}).some((v) => String(v).startsWith('postgres://')), `${name} on PostgreSQL`).to.equal(true);
    }
  });

  it('names only entry points that the build makes, each with flags and variables of its server', () => {
    for (const [name, s] of ours) {
      expect(s.command?.[0], name).to.equal('node');
      const entry = s.command![1];
      expect(existsSync(join(ROOT, entry)), `${name}: ${entry}`).to.equal(true);
      const table = TABLES[entry];
      if (!table) continue; // keys, certs: one-shot scripts with their own options
      const flags = new Set(Object.values(table).flatMap((x) => (x.flag ? [`--${x.flag}`] : [])));
      const envs = new Set(Object.values(table).flatMap((x) => (x.env ? [x.env] : [])));
      for (const arg of s.command!.slice(2).filter((a) => a.startsWith('--'))) expect(flags.has(arg), `${name}: ${arg}`).to.equal(true);
      for (const variable of Object.keys(s.environment ?? {})) expect(envs.has(variable), `${name}: ${variable}`).to.equal(true);
    }
  });

  it('depends only on services and volumes it declares', () => {
    const names = new Set(services.map(([n]) => n));
    for (const [name, s] of services) {
      for (const dep of Object.keys(s.depends_on ?? {})) expect(names.has(dep), `${name} depends on ${dep}`).to.equal(true);
      for (const volume of s.volumes ?? []) expect(compose.volumes, `${name}: ${volume}`).to.have.property(volume.split(':')[0]);
    }
  });

  it('the Dockerfile builds with npm run build and starts an entry point of the build', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const scripts = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts as Record<string, string>;
    expect(dockerfile).to.match(/^RUN npm run build\b/m);
    expect(scripts.build).to.include('tsc -p tsconfig.build.json');
    const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]) as string[];
    expect(cmd[0]).to.equal('node');
    expect(existsSync(join(ROOT, cmd[1])), cmd[1]).to.equal(true);
  });

  it('the build imports only production dependencies, which the image keeps (npm prune --omit=dev)', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const builtins = new Set(builtinModules);
    const missing: string[] = [];
    for (const file of jsFiles(join(ROOT, 'dist'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/^import (?:[^'"]+ from )?['"]([^'"]+)['"]/gm)) {
        const spec = m[1];
        if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        if (!(name in pkg.dependencies)) missing.push(`${relative(ROOT, file)}: ${spec}`);
      }
    }
    expect(missing).to.deep.equal([]);
  });
});
