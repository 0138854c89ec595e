import { startSystem, ISSUER_CODE, money } from '/work/main/test/helpers/system.ts';
import { openAccount, rider, enroll } from '/work/main/test/helpers/rider.ts';
import { issueCard } from '/work/main/common/card.ts';
import { TapFactory, sendBatches, batchesOf } from '/work/main/bench/ingest.ts';
import { credentials } from '@grpc/grpc-js';

const sys = await startSystem({ terminals: 0 });
const riders = [];
for (let i = 0; i < 500; i++) {
  const r = rider(i);
  await openAccount(sys, r, 100_000_000n);
  const card = issueCard(sys.masterKey, { cardId: `C${i}`, issuerCode: ISSUER_CODE, expiresOn: '2099-12-31' });
  const { card: enrolled, response } = await enroll(sys, card, r);
  riders.push({ index: i, accountId: r.accountId, name: r.name, phoneNumber: r.phoneNumber, card: enrolled, agreementId: response.creditFlag!.agreementId });
}
function instrument(db: any, name: string) {
  const started = new Map<string, number>();
  const agg = new Map<string, { n: number; ms: number }>();
  db.on('query', (q: any) => started.set(q.__knexQueryUid, performance.now()));
  db.on('query-response', (_r: any, q: any) => {
    const t = started.get(q.__knexQueryUid); if (t === undefined) return; started.delete(q.__knexQueryUid);
    const shape = String(q.sql).replace(/\(\?(, \?)*\)/g, '(..)').replace(/(, \(\.\.\))+/g, ', ...').slice(0, 110);
    const a = agg.get(shape) ?? { n: 0, ms: 0 }; a.n++; a.ms += performance.now() - t; agg.set(shape, a);
  });
  return () => [...agg].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25).map(([k, v]) => `${v.ms.toFixed(0).padStart(7)} ms ${String(v.n).padStart(6)}x  ${name}: ${k}`).join('\n');
}
const ri = instrument(sys.issuer.db, 'issuer');
const ra = instrument(sys.authorizer.db, 'authorizer');
const vts = ['B1', 'B2'];
const f = new TapFactory(riders as any, vts, 200);
const senders = vts.map((terminalId) => ({ terminalId, credentials: credentials.createInsecure() }));
const N = 20000;
const taps = vts.map((id) => f.build(id, N / 2));
const t0 = performance.now();
await sendBatches(sys.issuer.address, senders, taps.map((t) => batchesOf(t, 500)), 500);
for (;;) { const [r] = await sys.issuer.db('taps').where({ state: 'SETTLED' }).count({ n: '*' }); if (Number(r.n) >= N) break; await new Promise((r) => setTimeout(r, 100)); }
console.log('total s', ((performance.now() - t0) / 1000).toFixed(1));
console.log(ri()); console.log(ra());
await sys.close();
