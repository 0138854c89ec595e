import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../common/db.ts';
import { migrations, MIGRATIONS_TABLE } from '../issuer/migrations.ts';
const dir = mkdtempSync(join(tmpdir(), 'ins-'));
const row = (i: number) => ({ tap_id: `T:${i}`, terminal_id: 'T', terminal_sequence: String(i), card_id: `C${i % 5000}`, agreement_id: 'agr_x', fare_currency: 'CNY', fare_minor: '200', tapped_at: String(Date.now()), proof_counter: String(i), proof_terminal_random: Buffer.alloc(8, 1), proof_mac: Buffer.alloc(8, 2), fingerprint: 'f'.repeat(64), state: 'RECEIVED', decline_reason: null, traceparent: null, line_id: null, service_day: '2026-11-25', due_minor: '200', clone_reason: null, charged_currency: null, charged_minor: null, received_at: String(Date.now()), updated_at: String(Date.now()) });
for (const mode of ['knex', 'values', 'knex', 'values']) {
  const db = await openDatabase({ url: join(dir, `${mode}-${Math.random()}.sqlite`), migrations, migrationsTable: MIGRATIONS_TABLE });
  const N = 20000, B = 500; let k = 0;
  const c0 = process.cpuUsage(); const t0 = performance.now();
  for (let b = 0; b < N / B; b++) {
    const rows = Array.from({ length: B }, () => row(k++));
    await db.transaction(async (trx) => {
      for (let i = 0; i < rows.length; i += 250) {
        const part = rows.slice(i, i + 250);
        if (mode === 'knex') await trx('taps').insert(part);
        else {
          const cols = Object.keys(part[0]);
          const sql = `insert into taps (${cols.join(',')}) values ${part.map(() => `(${cols.map(() => '?').join(',')})`).join(',')}`;
          await trx.raw(sql, part.flatMap((r: any) => cols.map((c) => r[c])));
        }
      }
    });
  }
  const c = process.cpuUsage(c0);
  console.log(mode, 'rows/s', Math.round(N / ((performance.now() - t0) / 1000)), 'main cpu µs/row', ((c.user + c.system) / N).toFixed(1));
  await db.destroy();
}
