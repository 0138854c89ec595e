// onShutdownSignal (common/server.ts) in a child process: a SIGTERM that
// comes while the server is still starting waits for the start, then stops
// it gracefully, instead of killing the process with the default action.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';

const root = join(import.meta.dirname, '..');

/** Runs a script that signals itself, then reports when its (pretend) server has started and stopped. */
function run(script: string): Promise<{ code: number | null; signal: string | null; stdout: string }> {
  const source = `
    import { onShutdownSignal } from ${JSON.stringify(join(root, 'common', 'server.ts'))};
    import { createLogger } from ${JSON.stringify(join(root, 'common', 'log.ts'))};
    const shutdown = onShutdownSignal(createLogger('test', undefined, 'silent'));
    ${script}
  `;
  return new Promise((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', source], { cwd: root }, (err, stdout) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, signal: (err as { signal?: string } | null)?.signal ?? null, stdout }),
    ),
  );
}

describe('shutdown on SIGTERM', function () {
  this.timeout(30_000);

  it('a signal during startup waits for the start, then stops the server once and exits 0', async () => {
    const result = await run(`
      process.kill(process.pid, 'SIGTERM');
      await new Promise((r) => setTimeout(r, 300)); // still starting when the signal comes
      console.log('started');
      shutdown.started(async () => console.log('stopped'));
      process.kill(process.pid, 'SIGTERM'); // a second signal changes nothing
      await new Promise((r) => setTimeout(r, 5000));
      console.log('still running');
    `);
    expect(result).to.deep.include({ code: 0, signal: null });
    expect(result.stdout.trim().split('\n')).to.deep.equal(['started', 'stopped']);
  });

  it('a signal after the start stops the server and exits 0; a failed stop exits 1', async () => {
    expect(await run(`shutdown.started(async () => console.log('stopped')); process.kill(process.pid, 'SIGTERM'); await new Promise((r) => setTimeout(r, 5000));`)).to.deep.include({ code: 0, stdout: 'stopped\n' });
    expect(await run(`shutdown.started(async () => { throw new Error('no'); }); process.kill(process.pid, 'SIGINT'); await new Promise((r) => setTimeout(r, 5000));`)).to.deep.include({ code: 1 });
  });
});
