// Assert an error's class AND its stable code (STYLE 6), for sync throws and rejected promises.
import { expect } from 'vitest';
import type { ErrorCode, PostcopyError } from '../../src/common/errors.js';

/** Run fn; it must throw an instance of `cls` with `code`. Returns the error for further checks. */
export function expectThrows<E extends PostcopyError>(fn: () => unknown, cls: abstract new (...args: never[]) => E, code: ErrorCode): E {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  return expectError(caught, cls, code);
}

/** The promise must reject with an instance of `cls` with `code`. */
export async function expectRejects<E extends PostcopyError>(p: Promise<unknown>, cls: abstract new (...args: never[]) => E, code: ErrorCode): Promise<E> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  return expectError(caught, cls, code);
}

/** `e` must be an instance of `cls` carrying `code`. */
export function expectError<E extends PostcopyError>(e: unknown, cls: abstract new (...args: never[]) => E, code: ErrorCode): E {
  if (e === undefined) expect.fail(`expected ${cls.name} ${code}, but nothing was thrown`);
  if (!(e instanceof cls)) expect.fail(`expected ${cls.name} ${code}, got ${describe(e)}`);
  expect((e as E).code, `code of ${describe(e)}`).toBe(code);
  return e as E;
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.constructor.name}${'code' in e ? ` ${String((e as { code: unknown }).code)}` : ''}: ${e.message}`;
  return String(e);
}
