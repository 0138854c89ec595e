// Preloaded into each server by `npm run bench -- --profile` (node --import):
// SIGUSR2 starts the V8 CPU profiler, the next SIGUSR2 stops it and writes
// <TAPCREDIT_PROFILE_DIR>/<TAPCREDIT_PROFILE_NAME>.<n>.cpuprofile, so a
// profile covers one measured phase only, not start-up and enrollment.
// (node --cpu-prof profiles the whole process life.)
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.TAPCREDIT_PROFILE_DIR;
const name = process.env.TAPCREDIT_PROFILE_NAME ?? String(process.pid);
if (dir) {
  const session = new Session();
  session.connect();
  let running = false;
  let count = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () => session.post('Profiler.setSamplingInterval', { interval: 500 }, () => session.post('Profiler.start')));
      return;
    }
    running = false;
    const n = ++count;
    session.post('Profiler.stop', (err, result) => {
      if (!err && result) writeFileSync(join(dir, `${name}.${n}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
