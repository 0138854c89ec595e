// Request validation that collects every field violation before anything
// touches state, so a bad request gets one INVALID_ARGUMENT naming them all.
import type { Money } from '../gen/tapcredit/type/v1/money.js';
import { invalidArgument, type FieldViolation } from './errors.js';

const ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
const CURRENCY_PATTERN = /^[A-Z]{3}$/;
const INT64_MAX = 2n ** 63n - 1n;
export const MAX_BATCH = 5000;

const UINT63_MAX = 2n ** 63n - 1n;

export class Violations {
  readonly list: FieldViolation[] = [];

  add(field: string, description: string): void {
    this.list.push({ field, description });
  }

  /** Checks an id: 1-64 characters of letters, digits, '.', '_', ':', '-'. */
  id(field: string, value: string): boolean {
    if (!value) this.add(field, 'is required');
    else if (!ID_PATTERN.test(value)) this.add(field, "must be 1-64 characters of letters, digits, '.', '_', ':', '-'");
    else return true;
    return false;
  }

  text(field: string, value: string, max = 200): boolean {
    if (!value || !value.trim()) this.add(field, 'is required');
    else if (value.length > max) this.add(field, `must be at most ${max} characters`);
    else return true;
    return false;
  }

  currency(field: string, value: string): boolean {
    if (!CURRENCY_PATTERN.test(value)) {
      this.add(field, 'must be an ISO 4217 code of three upper-case letters');
      return false;
    }
    return true;
  }

  /** Checks a Money value; returns its amount as a bigint when valid. */
  money(field: string, value: Money | undefined, opts: { positive?: boolean; nonNegative?: boolean } = {}): bigint | undefined {
    if (!value) {
      this.add(field, 'is required');
      return undefined;
    }
    const currencyOk = this.currency(`${field}.currency_code`, value.currencyCode);
    let amount: bigint;
    try {
      amount = BigInt(value.minorUnits);
    } catch {
      this.add(`${field}.minor_units`, 'must be an integer');
      return undefined;
    }
    if (amount > INT64_MAX || amount < -INT64_MAX) this.add(`${field}.minor_units`, 'is out of the int64 range');
    else if (opts.positive && amount <= 0n) this.add(`${field}.minor_units`, 'must be positive');
    else if (opts.nonNegative && amount < 0n) this.add(`${field}.minor_units`, 'must not be negative');
    else if (currencyOk) return amount;
    return undefined;
  }

  enumValue(field: string, value: number, allowed: readonly number[]): boolean {
    if (!allowed.includes(value)) {
      this.add(field, value === 0 ? 'is required (must not be UNSPECIFIED)' : `has unknown value ${value}`);
      return false;
    }
    return true;
  }

  /** A uint64 carried as a decimal string, within what a bigInteger column holds (0 .. 2^63-1); undefined when it is not. */
  uint63(field: string, value: string): bigint | undefined {
    let n: bigint;
    try {
      n = BigInt(value);
    } catch {
      this.add(field, 'must be an integer');
      return undefined;
    }
    if (n < 0n || n > UINT63_MAX) {
      this.add(field, 'must be between 0 and 2^63-1');
      return undefined;
    }
    return n;
  }

  batch(field: string, items: readonly unknown[]): boolean {
    if (items.length === 0) this.add(field, 'must hold at least one item');
    else if (items.length > MAX_BATCH) this.add(field, `must hold at most ${MAX_BATCH} items`);
    else return true;
    return false;
  }

  /** Throws INVALID_ARGUMENT with every violation found, if any. */
  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}

/** Page size with a default and an upper bound, as AIP-158 asks. */
export function pageSize(v: Violations, value: number, def: number, max: number): number {
  if (value < 0) v.add('page_size', 'must not be negative');
  return value <= 0 ? def : Math.min(value, max);
}
