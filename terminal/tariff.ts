// The tariff: a flat fare per line (or route), in one currency. Each terminal
// serves one line and charges that line's fare for every ride. Read from a
// JSON file, e.g.
//   { "currency": "CNY", "lines": { "M1": 300, "B12": 200 } }
// or from a compact string, e.g. "CNY:M1=300,B12=200" (TARIFF env).
import { readFileSync } from 'node:fs';
import type { Money } from '../gen/tapcredit/type/v1/money.js';

export interface Tariff {
  currency: string;
  /** Line id -> fare in minor units. */
  lines: Map<string, bigint>;
}

const LINE_ID = /^[A-Za-z0-9._-]{1,64}$/;

function checkedTariff(currency: string, entries: [string, unknown][]): Tariff {
  if (!/^[A-Z]{3}$/.test(currency)) throw new Error(`tariff currency must be an ISO 4217 code, got ${JSON.stringify(currency)}`);
  if (entries.length === 0) throw new Error('the tariff names no line');
  const lines = new Map<string, bigint>();
  for (const [line, fare] of entries) {
    if (!LINE_ID.test(line)) throw new Error(`tariff line id ${JSON.stringify(line)} must be 1-64 letters, digits, '.', '_', '-'`);
    const text = String(fare);
    if (!/^\d+$/.test(text) || BigInt(text) <= 0n) throw new Error(`fare of line ${line} must be a positive whole number of minor units, got ${JSON.stringify(fare)}`);
    lines.set(line, BigInt(text));
  }
  return { currency, lines };
}

/** Parses "CNY:M1=300,B12=200". */
export function parseTariff(text: string): Tariff {
  const m = /^([A-Z]{3}):(.+)$/.exec(text.trim());
  if (!m) throw new Error(`tariff must look like "CNY:M1=300,B12=200", got ${JSON.stringify(text)}`);
  const entries = m[2].split(',').map((pair): [string, string] => {
    const [line, fare, extra] = pair.trim().split('=');
    if (fare === undefined || extra !== undefined) throw new Error(`tariff entry ${JSON.stringify(pair)} must be LINE=FARE`);
    return [line, fare];
  });
  return checkedTariff(m[1], entries);
}

/** Reads a JSON tariff file { "currency": "CNY", "lines": { "M1": 300 } }. */
export function readTariffFile(path: string): Tariff {
  const json = JSON.parse(readFileSync(path, 'utf8'));
  if (!json || typeof json !== 'object' || typeof json.lines !== 'object' || json.lines === null) {
    throw new Error(`tariff file ${path} must hold {"currency": "...", "lines": {"<line>": <fare>}}`);
  }
  return checkedTariff(String(json.currency), Object.entries(json.lines));
}

/** The fare of a line; throws when the tariff does not know it (a terminal must not start with no fare). */
export function fareForLine(tariff: Tariff, lineId: string): Money {
  const fare = tariff.lines.get(lineId);
  if (fare === undefined) throw new Error(`line ${JSON.stringify(lineId)} is not in the tariff (lines: ${[...tariff.lines.keys()].join(', ')})`);
  return { currencyCode: tariff.currency, minorUnits: fare.toString() };
}
