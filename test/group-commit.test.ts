import { expect } from 'chai';
import { GroupCommit } from '../common/group-commit.js';

/** A commit that records its groups and can be told to fail on an item. */
function recorder(failOn?: (item: number) => boolean) {
  const groups: number[][] = [];
  let release: (() => void) | undefined;
  const commit = async (items: number[]) => {
    groups.push(items);
    // The first commit waits until released, so the next submissions queue behind it.
    if (groups.length === 1) await new Promise<void>((resolve) => (release = resolve));
    if (failOn && items.some(failOn)) throw new Error(`cannot commit ${items.filter(failOn).join(',')}`);
    return items.map((i) => i * 10);
  };
  return { groups, commit, release: () => release?.() };
}

describe('GroupCommit', () => {
  it('commits a lone item at once, and the items that arrive meanwhile together next, in order', async () => {
    const r = recorder();
    const gc = new GroupCommit({ commit: r.commit, maxWeight: 100 });
    const first = gc.submit(1);
    const rest = [2, 3, 4].map((i) => gc.submit(i));
    expect(r.groups).to.deep.equal([[1]]);
    r.release();
    expect(await Promise.all([first, ...rest])).to.deep.equal([10, 20, 30, 40]);
    expect(r.groups).to.deep.equal([[1], [2, 3, 4]]);
    expect(gc.stats).to.deep.equal({ groups: 2, items: 4 });
  });

  it('keeps a group within the weight limit; an item heavier than the limit goes alone', async () => {
    const r = recorder();
    const gc = new GroupCommit({ commit: r.commit, maxWeight: 5, weight: (i: number) => i });
    const all = [1, 2, 3, 4, 9, 1].map((i) => gc.submit(i));
    r.release();
    await Promise.all(all);
    expect(r.groups).to.deep.equal([[1], [2, 3], [4], [9], [1]]);
  });

  it('when a group fails, commits each item alone: only the bad one is rejected', async () => {
    const r = recorder((i) => i === 3);
    const gc = new GroupCommit({ commit: r.commit, maxWeight: 100 });
    const all = [1, 2, 3, 4].map((i) => gc.submit(i));
    r.release();
    const settled = await Promise.allSettled(all);
    expect(settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message))).to.deep.equal([10, 20, 'cannot commit 3', 40]);
    expect(r.groups).to.deep.equal([[1], [2, 3, 4], [2], [3], [4]]);
  });

  it('goes on after a failure: the next submission is committed', async () => {
    const r = recorder((i) => i === 1);
    const gc = new GroupCommit({ commit: r.commit, maxWeight: 100 });
    const failed = gc.submit(1);
    r.release();
    await failed.then(
      () => expect.fail('should have failed'),
      (err: Error) => expect(err.message).to.equal('cannot commit 1'),
    );
    expect(await gc.submit(2)).to.equal(20);
  });
});
