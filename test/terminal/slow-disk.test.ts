// A slow disk at the terminal (issue 19): every commit is held 50-200 ms, as
// a slow fsync holds it. A crowd of cards is still decided within the card's
// deadline (each ACCEPT after its tap is durable), the taps accepted during a
// commit share the next one, and the forwarder's batches grow instead of
// timing out: every tap reaches the issuer exactly once.
import { credentials } from '@grpc/grpc-js';
import { expect } from 'chai';
import { presentCardImage } from '../../common/present-card.js';
import { Decision, TerminalServiceClient } from '../../gen/tapcredit/terminal/v1/terminal.js';
import type { TerminalHandle } from '../../terminal/service.js';
import { enrolledCard, FakeIssuer, removeDir, startTestTerminal, tempDir, waitFor } from './fixtures.js';

const CARDS = 40;
/** The card's deadline for the whole exchange: generous, the machine is shared. */
const DEADLINE_MS = 5_000;

describe('terminal on a slow disk (fsync 50-200 ms)', function () {
  this.timeout(60_000);
  let dir: string;
  let issuer: FakeIssuer;
  let terminal: TerminalHandle;
  let client: TerminalServiceClient;

  before(async () => {
    dir = tempDir();
    issuer = await new FakeIssuer().start();
    terminal = await startTestTerminal(dir, issuer.address, { commitDelayMs: () => 50 + Math.floor(Math.random() * 150), forwardBatchSize: 500 });
    client = new TerminalServiceClient(terminal.address, credentials.createInsecure());
  });
  after(async () => {
    client.close();
    await terminal.close();
    issuer.stop();
    removeDir(dir);
  });

  it('accepts every card within its deadline, commits them in groups, and forwards growing batches exactly once', async () => {
    const results = await Promise.all(Array.from({ length: CARDS }, (_, i) => presentCardImage(client, enrolledCard(`SLOW${i}`), DEADLINE_MS)));
    expect(results.every((r) => r.decision === Decision.DECISION_ACCEPT)).to.equal(true);
    const tapIds = results.map((r) => r.tap!.tapId);
    // Group commit: the taps accepted during a slow commit share the next one.
    const { groups, items } = terminal.store.commitStats;
    expect(items).to.equal(CARDS);
    expect(groups).to.be.lessThan(CARDS);

    await waitFor(() => issuer.stored.size === CARDS, 30_000);
    expect([...issuer.stored.keys()].sort()).to.deep.equal([...tapIds].sort());
    // Taps accepted while the forwarder waited on the disk went out together.
    const sizes = issuer.reports.map((r) => r.taps.length);
    expect(Math.max(...sizes)).to.be.greaterThan(1);
    await waitFor(async () => (await terminal.store.counts()).unsentTapCount === 0, 10_000);
    console.log(`      ${CARDS} taps in ${groups} commits; TapReport batch sizes: ${sizes.join(',')}`);
  });
});
