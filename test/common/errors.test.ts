// systemErrorCode: the one rule by which D's block store and the link tell a local OS failure from a bug or the peer's.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BackendError, ProtocolError, systemErrorCode } from '../../src/common/errors.js';

describe('systemErrorCode', () => {
  it('a failed system call of our own gives its code', () => {
    let e: unknown;
    try {
      readFileSync('/nonexistent/postcopy-test');
    } catch (x) {
      e = x;
    }
    expect(systemErrorCode(e)).toBe('ENOENT');
    expect(systemErrorCode(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' }))).toBe('ENOSPC');
  });

  it('our own errors, plain errors, non-errors and codes without a system call are not system errors', () => {
    expect(systemErrorCode(new BackendError('PC_ERR_BACKEND', 'x', { errno: 5 }))).toBeNull();
    expect(systemErrorCode(new ProtocolError('PC_ERR_MALFORMED', 'x'))).toBeNull();
    expect(systemErrorCode(new Error('boom'))).toBeNull();
    expect(systemErrorCode(Object.assign(new Error('x'), { code: 'ERR_INVALID_ARG_TYPE' }))).toBeNull();
    expect(systemErrorCode({ code: 'EIO', syscall: 'write' })).toBeNull();
    expect(systemErrorCode(null)).toBeNull();
  });
});
