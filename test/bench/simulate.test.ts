// `npm run simulate` on a short day: the servers as child processes, riders
// tapping, debts, lost cards, fakes; the day must end reconciled.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';

const root = join(import.meta.dirname, '..', '..');

describe('simulate (npm run simulate, a 15-second day)', function () {
  this.timeout(180_000);

  it("ends the day with every reconciliation check OK: nothing lost, debited = settled, the ledger balanced", async () => {
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        ['--import', 'tsx', join(root, 'bench', 'simulate.ts'), '--minutes', '0.25', '--riders', '40', '--terminals', '2', '--rate', '8'],
        { cwd: root, maxBuffer: 16 * 2 ** 20 },
        (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
    expect(code, `simulate failed:\n${stdout}\n${stderr.slice(-2000)}`).to.equal(0);
    const accepted = Number(/accepted: (\d+)/.exec(stdout)?.[1]);
    expect(accepted, 'taps accepted').to.be.greaterThan(0);
    const checks = stdout.split('\n').filter((l) => /^ {2}(OK|FAIL)/.test(l));
    expect(checks).to.have.length(5);
    expect(checks.filter((l) => l.includes('FAIL'))).to.deep.equal([]);
    expect(stdout).to.include(`no accepted tap lost: ${accepted} accepted at the gates, ${accepted} at the issuer`);
    expect(stdout).to.match(/cards reported lost at 40% of the day/);
  });
});
