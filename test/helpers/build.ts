// `npm run build` once per test process, for the tests of what is deployed
// (dist/). The build is incremental: when dist/ is up to date it writes nothing.
import { execFile } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');
let built: Promise<void> | undefined;

export function ensureBuilt(): Promise<void> {
  built ??= new Promise((resolve, reject) =>
    execFile('npm', ['run', 'build', '--silent'], { cwd: ROOT, timeout: 300_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`npm run build failed:\n${stdout}${stderr}`)) : resolve(),
    ),
  );
  return built;
}
