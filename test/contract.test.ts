// The contract's compatibility check (npm run check:breaking) compares
// proto/ with the last released contract, contract/released.binpb: it passes
// on the current protos and fails on a change that would break a client.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';

const root = new URL('..', import.meta.url).pathname;
const buf = join(root, 'node_modules', '.bin', 'buf');
const breaking = (dir: string) => spawnSync(buf, ['breaking', dir, '--against', join(root, 'contract', 'released.binpb')], { encoding: 'utf8', timeout: 60_000 });

describe('contract compatibility (buf breaking against the release)', function () {
  this.timeout(120_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tapcredit-contract-'));
    cpSync(join(root, 'proto'), join(dir, 'proto'), { recursive: true });
    cpSync(join(root, 'buf.yaml'), join(dir, 'buf.yaml'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('passes on the protos as they are', () => {
    const run = breaking(dir);
    expect(run.status, run.stdout + run.stderr).to.equal(0);
  });

  it('fails when a released field is removed, naming it', () => {
    const file = join(dir, 'proto', 'tapcredit', 'type', 'v1', 'money.proto');
    const text = readFileSync(file, 'utf8');
    const edited = text.replace(/^\s*string currency_code = 1;\n/m, '');
    expect(edited, 'the test edits the proto').to.not.equal(text);
    writeFileSync(file, edited);
    const run = breaking(dir);
    expect(run.status).to.not.equal(0);
    expect(run.stdout + run.stderr).to.match(/currency_code/);
  });
});
