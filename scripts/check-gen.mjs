// Fails when gen/ is out of date with proto/: regenerates into a scratch
// directory and compares it file by file with the committed gen/.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), 'tapcredit-gen-'));

function listFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? listFiles(path) : [path];
  });
}

try {
  const template = readFileSync(join(root, 'buf.gen.yaml'), 'utf8').replace(/out: gen/g, `out: ${join(scratch, 'gen')}`);
  writeFileSync(join(scratch, 'buf.gen.yaml'), template);
  const buf = join(root, 'node_modules/.bin/buf');
  execFileSync(buf, ['generate', '--template', join(scratch, 'buf.gen.yaml')], { cwd: root, stdio: 'inherit' });
  execFileSync(buf, ['build', '-o', join(scratch, 'gen/descriptor.binpb')], { cwd: root, stdio: 'inherit' });
  execFileSync(buf, ['build', 'node_modules/grpc-health-check/proto', '-o', join(scratch, 'gen/health.binpb')], { cwd: root, stdio: 'inherit' });

  const committed = new Set(listFiles(join(root, 'gen')).map((f) => relative(join(root, 'gen'), f)));
  const fresh = new Set(listFiles(join(scratch, 'gen')).map((f) => relative(join(scratch, 'gen'), f)));
  const stale = [];
  for (const f of new Set([...committed, ...fresh])) {
    if (!committed.has(f) || !fresh.has(f)) stale.push(f);
    else if (!readFileSync(join(root, 'gen', f)).equals(readFileSync(join(scratch, 'gen', f)))) stale.push(f);
  }
  if (stale.length > 0) {
    console.error(`gen/ is out of date with proto/ (${stale.join(', ')}): run \`npm run generate\` and commit gen/.`);
    process.exit(1);
  }
  console.log('gen/ is up to date with proto/');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
