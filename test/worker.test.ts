import { expect } from 'chai';
import { pino } from 'pino';
import { Worker } from '../common/worker.js';
import { sleep, waitFor } from './helpers/assert.js';

describe('Worker (outbox loop)', () => {
  const log = pino({ level: 'silent' });
  const random = Math.random;
  afterEach(() => (Math.random = random));

  it('runs a step when kicked while idle, and polls again after the interval', async () => {
    let steps = 0;
    const worker = new Worker(async () => (steps++, false), { name: 'idle', intervalMs: 60_000, log });
    worker.start();
    await waitFor(() => steps === 1);
    worker.kick();
    await waitFor(() => steps === 2);
    await worker.stop();
  });

  it('backs off after a failure and does not let kicks cut the backoff short; retryNow does', async () => {
    Math.random = () => 0.5; // the jittered wait is then half the cap: 2 x 60 s / 2 = 60 s
    let steps = 0;
    const worker = new Worker(async () => {
      steps++;
      throw new Error('receiver down');
    }, { name: 'down', intervalMs: 60_000, log });
    worker.start();
    await waitFor(() => steps === 1);
    for (let i = 0; i < 50; i++) worker.kick(); // e.g. 50 taps accepted while the issuer is down
    await sleep(100);
    expect(steps).to.equal(1);
    worker.retryNow();
    await waitFor(() => steps === 2);
    await worker.stop(); // stop() does not wait out the backoff
    expect(steps).to.equal(2);
  });

  it('does not lose a kick that comes while a step runs: the next step follows without the idle wait', async () => {
    let steps = 0;
    let release: () => void = () => {};
    const worker = new Worker(async () => {
      steps++;
      if (steps === 1) await new Promise<void>((r) => (release = r));
      return false;
    }, { name: 'busy', intervalMs: 60_000, log });
    worker.start();
    await waitFor(() => steps === 1);
    worker.kick(); // new work while the first step is still running
    release();
    await waitFor(() => steps === 2, 5000);
    await worker.stop();
  });

  it('with a batching window, gathers the work kicked in during the window into one step', async () => {
    let waiting = 0;
    const batches: number[] = [];
    const worker = new Worker(async () => {
      if (waiting > 0) batches.push(waiting);
      waiting = 0;
      return false;
    }, { name: 'windowed', intervalMs: 60_000, windowMs: 300, log });
    worker.start();
    await sleep(20); // the first step (at start) finds nothing
    for (let i = 0; i < 5; i++) {
      waiting++;
      worker.kick();
      await sleep(5);
    }
    await waitFor(() => batches.length === 1, 5000);
    expect(batches).to.deep.equal([5]);
    await worker.stop();
  });

  it('counts consecutive failures for the backoff and starts again from one after a success', async () => {
    Math.random = () => 0; // no wait: every failure retries at once
    const failures: number[] = [];
    const counting = { warn: (fields: { failures: number }) => failures.push(fields.failures) } as unknown as typeof log;
    const outcomes = ['fail', 'fail', 'more', 'fail', 'idle'];
    let steps = 0;
    const worker = new Worker(async () => {
      const outcome = outcomes[steps++];
      if (outcome === 'fail') throw new Error('receiver down');
      return outcome === 'more';
    }, { name: 'flaky', intervalMs: 60_000, log: counting });
    worker.start();
    await waitFor(() => steps === 5);
    expect(failures).to.deep.equal([1, 2, 1]);
    await worker.stop();
  });
});
