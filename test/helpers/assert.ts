// Assertions and waits shared by every test file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import type { Knex } from 'knex';
import { ApiError, decodeErrorDetails } from '../../common/errors.js';

export { sleep };

/** A fresh temp directory; remove it with removeDir. */
export const tempDir = (prefix = 'tapcredit-test-') => mkdtempSync(join(tmpdir(), prefix));
export const removeDir = (dir: string) => rmSync(dir, { recursive: true, force: true });

/** Polls until check() returns a truthy value (or rethrows its last error after timeoutMs). */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw lastError ?? new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (err: unknown) => err,
  );
}

/** Asserts that a gRPC call rejects with the code (and ErrorInfo reason); returns the error. */
export async function expectGrpcError(promise: Promise<unknown>, code: number, reason?: string): Promise<ServiceError> {
  const error = (await rejection(promise)) as ServiceError | undefined;
  expect(error, 'expected the call to fail').to.not.equal(undefined);
  expect(error!.code, error!.message).to.equal(code);
  if (reason) expect(decodeErrorDetails(error!).errorInfo?.reason, error!.message).to.equal(reason);
  return error!;
}

/** Asserts that a domain call rejects with an ApiError of the reason (and code, when given); returns it. */
export async function expectApiError(promise: Promise<unknown>, codeOrReason: number | string, reason?: string): Promise<ApiError> {
  const error = await rejection(promise);
  expect(error, 'expected an ApiError').to.be.instanceOf(ApiError);
  const apiError = error as ApiError;
  if (typeof codeOrReason === 'number') {
    expect({ code: apiError.code, reason: apiError.reason }, apiError.message).to.deep.equal({ code: codeOrReason, reason });
  } else {
    expect(apiError.reason, apiError.message).to.equal(codeOrReason);
  }
  return apiError;
}

/** Row counts of every table of a database: compared before and after a refused call to show nothing changed. */
export async function tableCounts(db: Knex): Promise<Record<string, number>> {
  const tables: string[] =
    db.client.config.client === 'pg'
      ? (await db('information_schema.tables').where({ table_schema: db.raw('current_schema()') }).select('table_name')).map((r: any) => r.table_name)
      : (await db('sqlite_master').where({ type: 'table' }).whereNot('name', 'like', 'sqlite_%').select('name')).map((r: any) => r.name);
  const counts: Record<string, number> = {};
  for (const t of tables.sort()) counts[t] = Number((await db(t).count({ n: '*' }))[0].n);
  return counts;
}
