// Writes a bench report as JSON (everything measured) and Markdown (the
// figures a reader compares), bench/reports/<timestamp>.{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchReport, EndToEnd } from './run.js';
import type { LatencySummary } from './stats.js';

const n = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : String(x));
const ms = (l: LatencySummary) => `${l.p50Ms} / ${l.p99Ms} / ${l.maxMs}`;
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const e = r.endToEnd;
  const lines: string[] = [];
  lines.push(`# tapcredit bench ${r.startedAt}${r.quick ? ' (quick: proves the harness, figures not meaningful)' : ''}`, '');
  lines.push(
    `Machine: ${m.nproc} cores (${m.cpuModel}), ${n(m.memoryMb)} MB memory, ${m.platform}, Node ${m.node}; ` +
      `load average ${m.loadAverageStart.join(' ')} at the start, ${m.loadAverageEnd.join(' ')} at the end.`,
  );
  lines.push(
    `Run: ${r.options.terminals} terminal processes x ${r.options.readersPerTerminal} readers, ${n(r.options.cards)} enrolled cards, ` +
      `transport ${r.transport}, issuer and authorizer on ${r.store === 'postgresql' ? 'PostgreSQL' : 'SQLite'}, LOG_LEVEL=${r.options.logLevel}, ${r.options.heapMb ? `--max-old-space-size=${r.options.heapMb}` : "Node's default heap"}, hops ${JSON.stringify(r.options.hops)} (flags of the servers' main.ts; their defaults otherwise). Setup (accounts + enrollment): ${r.setup.seconds} s.`,
    '',
  );

  lines.push('## Targets', '', '| figure | target | measured | met |', '| --- | --- | --- | --- |');
  for (const t of r.targets) lines.push(`| ${t.name} | ${t.target} | ${t.measured} | ${t.met ? 'yes' : 'no'} |`);
  lines.push('');

  const pc = r.presentCard;
  lines.push('## Terminal decision latency (PresentCard, durable write included)', '', '| load | calls | p50 / p99 / max ms |', '| --- | --- | --- |');
  lines.push(`| isolated: ${pc.isolated.terminals} terminals, one card at a time each, ${pc.isolated.rate} taps/s in all | ${n(pc.isolated.count)} | ${ms(pc.isolated)} |`);
  lines.push(`| under the end-to-end load | ${n(pc.underLoad.count)} | ${ms(pc.underLoad)} |`);
  lines.push(
    '',
    `Floor: echo unary call (one at a time) p50 ${pc.floor.transportP50Ms} / p99 ${pc.floor.transportP99Ms} ms + one durable single-row commit p50 ${pc.floor.commitP50Ms} / p99 ${pc.floor.commitP99Ms} ms; ` +
      `isolated p99 is ${pc.ratioP99ToFloor}x the floor's p99.`,
    '',
  );

  lines.push(
    '## Issuer TapReport ingest',
    '',
    '| batch | senders | taps/s | call p50 / p99 / max ms | transport limit taps/s | storage limit rows/s | of transport | of storage |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const t of r.tapReport) {
    lines.push(
      `| ${t.batchSize} | ${t.senders} | ${n(t.tapsPerSecond)} | ${ms(t.callLatency)} | ${n(t.transportTapsPerSecond)} | ${n(t.storageRowsPerSecond)} | ${pct(t.ratioToTransport)} | ${pct(t.ratioToStorage)} |`,
    );
  }
  lines.push('');

  endToEndSection(
    lines,
    '## End to end, the city: virtual terminals -> TapReport -> Deduct -> Settle -> SETTLED',
    'Taps accepted at virtual gates (real card proofs, stamped at ACCEPT), forwarded in TapReport batches by the generator playing the terminals\' forwarders; the two cores go to the issuer and the authorizer.',
    e,
    'transport limit (echo, batch 1000)',
  );
  endToEndSection(
    lines,
    '## End to end through terminal processes: PresentCard -> forwarder -> ... -> SETTLED',
    'Cards presented at the terminal processes (PresentCard over gRPC, each decision verified and committed), which forward to the issuer; the terminals share the two cores with the back office.',
    r.gates,
    'transport limit (echo unary at the same concurrency)',
  );

  lines.push('## Peak RSS (VmHWM)', '', '| server | MB |', '| --- | --- |');
  for (const [name, s] of Object.entries(r.servers)) lines.push(`| ${name} | ${s.peakRssMb} |`);
  lines.push('');

  lines.push('## Baselines', '', '| batch | senders | echo taps/s | echo call p99 ms | bare insert rows/s | commit p99 ms |', '| --- | --- | --- | --- | --- | --- |');
  r.baselines.transport.forEach((t, i) => {
    const s = r.baselines.storage[i];
    lines.push(`| ${t.batchSize} | ${t.senders} | ${n(t.tapsPerSecond)} | ${t.callLatency.p99Ms} | ${n(s.rowsPerSecond)} | ${s.commitLatency.p99Ms} |`);
  });
  const u = r.baselines.unaryTransport;
  lines.push('', `Echo unary, ${u.inFlight} calls in flight: ${n(u.callsPerSecond)} calls/s, p50 / p99 / max ${ms(u.latency)} ms.`, '');

  lines.push('## Durability', '');
  for (const [name, text] of Object.entries(r.durability)) lines.push(`- ${name}: ${text}`);
  lines.push('');
  return lines.join('\n');
}

function endToEndSection(lines: string[], title: string, about: string, e: EndToEnd, transportLimit: string): void {
  lines.push(title, '', about, '');
  const who = e.source === 'terminal processes' ? `${e.terminals} terminal processes x ${e.readersPerTerminal} readers` : `${e.terminals} virtual terminals`;
  lines.push(
    `| figure | value |`,
    `| --- | --- |`,
    `| drive | ${e.durationSeconds} s, ${who}, ${e.rate ? `${n(e.rate)} taps/s asked` : e.maxInFlight ? `as fast as settled (at most ${n(e.maxInFlight)} taps in flight)` : 'as fast as taken'} |`,
    `| accepted | ${n(e.accepted)} (${n(e.acceptedPerSecond)}/s)${e.presented !== undefined ? ` of ${n(e.presented)} presented` : ''} |`,
  );
  if (e.declined) lines.push(`| declined | ${JSON.stringify(e.declined)} |`);
  if (e.errors) lines.push(`| failed calls | ${JSON.stringify(e.errors)} |`);
  if (e.presentCardLatency) lines.push(`| PresentCard p50 / p99 / max under this load | ${ms(e.presentCardLatency)} ms |`);
  lines.push(
    `| settled (sustained, drive start -> last settled) | ${n(e.settled)}, **${n(e.settledPerSecond)} taps/s** |`,
    `| settled within the drive window | ${n(e.settledPerSecondInWindow)} taps/s |`,
    `| not settled at the end | ${n(e.unsettled)} |`,
    `| drain after the drive | ${e.drainSeconds} s |`,
    `| accept -> settled lag p50 / p99 / max | ${ms(e.lag)} ms |`,
    `| of ${transportLimit} | ${pct(e.ratioToTransport)} |`,
    `| of storage limit (bare insert, batch 1000) | ${pct(e.ratioToStorage)} |`,
    '',
    'CPU used from the drive start to the end of the drain (all threads: main, libuv pool running SQLite, GC):',
    '',
    '| process | CPU s | of it in the kernel | share of the machine |',
    '| --- | --- | --- | --- |',
  );
  for (const [name, c] of Object.entries(e.cpu)) lines.push(`| ${name} | ${c.seconds} | ${c.systemSeconds} | ${pct(c.shareOfMachine)} |`);
  lines.push('', `Accepted per second: ${e.timeline.accepted.join(' ')}`, '', `Settled per second: ${e.timeline.settled.join(' ')}`, '');
}

/** Writes <dir>/<timestamp>.json and .md; returns their paths. */
export function writeReport(r: BenchReport, dir: string): { json: string; markdown: string } {
  mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const json = join(dir, `${stamp}.json`);
  const markdown = join(dir, `${stamp}.md`);
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(markdown, renderMarkdown(r));
  return { json, markdown };
}
