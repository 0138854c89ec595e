// The scale-out scenario (scale.ts), small enough for every test run: two
// issuer and two authorizer replicas as child processes on PostgreSQL, one
// of each killed (SIGKILL) while taps flow. `npm run test:scale` runs it
// with 5000 taps and prints its figures.
import { expect } from 'chai';
import { POSTGRES_URL } from '../helpers/databases.js';
import { SCALE_DEFAULTS, runScaleScenario } from './scale.js';

if (POSTGRES_URL)
  describe('scale-out: replicas as processes on PostgreSQL', function () {
    this.timeout(180_000);

    it('loses no tap, debits and settles each once, when one issuer and one authorizer replica are killed mid-run', async () => {
      const report = await runScaleScenario({ ...SCALE_DEFAULTS, taps: 400, riders: 40, terminals: 2, lanes: 16, logLevel: 'warn' });
      expect(report.violations).to.deep.equal([]);
      expect(report.killed).to.have.members(['issuer-2', 'authorizer-1']);
      expect(report.figures.issuerTaps).to.deep.equal({ SETTLED: 400 });
      expect(report.figures.debitedCount).to.equal(400);
    });
  });
