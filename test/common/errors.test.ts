// systemErrorCode: the one rule by which D's block store and the link tell a local OS failure from a bug or the peer's.
// One class per code: every construction in src uses the class CODE_OWNER names for its code.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BackendError, CODE_OWNER, ERROR_CODES, ProtocolError, errorFor, systemErrorCode, toPostcopyError } from '../../src/common/errors.js';
import { ownerlessCodes, scanErrorOwners, scanTree } from './error-owner-scan.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

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

describe('one class per code', () => {
  it('every code in ERROR_CODES has an owning class, and CODE_OWNER names no other code', () => {
    expect(ownerlessCodes(Object.keys(ERROR_CODES))).toEqual([]);
    expect(Object.keys(CODE_OWNER).sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('errorFor builds the owner; toPostcopyError passes ours through and wraps the rest with its cause', () => {
    for (const code of Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[]) expect(errorFor(code, 'x')).toBeInstanceOf(CODE_OWNER[code]);
    const ours = new BackendError('PC_ERR_BACKEND', 'x');
    const wrap = (d: string, o: { cause: unknown }) => new ProtocolError('PC_ERR_MALFORMED', d, o);
    expect(toPostcopyError(ours, wrap)).toBe(ours);
    const bug = new TypeError('boom');
    const wrapped = toPostcopyError(bug, wrap);
    expect(wrapped).toBeInstanceOf(ProtocolError);
    expect([wrapped.detail, wrapped.cause]).toEqual(['boom', bug]);
  });

  it('the scan finds a wrong class, a run-time code and an unknown code, even split over lines, and nothing in classes not ours', () => {
    const text = [
      "import { ProtocolError, LinkClosedError, UsageError } from '../common/errors.js';",
      "throw new ProtocolError('PC_ERR_LINK_CLOSED', 'x');",
      "throw new LinkClosedError('PC_ERR_LINK_CLOSED', f('a', 'b'));",
      'throw new UsageError(',
      "  cond ? 'PC_ERR_USAGE' : 'PC_ERR_BACKEND',",
      ');',
      'throw new ProtocolError(code, "x");',
      "throw new ProtocolError('PC_ERR_NOPE');",
      "throw new RangeError('PC_ERR_USAGE');",
    ].join('\n');
    expect(scanErrorOwners('f.ts', text).map((v) => v.where + ' ' + v.what.split(':')[0])).toEqual([
      "f.ts:2 new ProtocolError('PC_ERR_LINK_CLOSED', …)",
      "f.ts:4 new UsageError('PC_ERR_BACKEND', …)",
      'f.ts:7 new ProtocolError(code, …)',
      'f.ts:8 PC_ERR_NOPE is not in ERROR_CODES',
    ]);
  });

  // Expected to fail until the session-core merge fixes the other helpers' files; it must pass after it.
  // POSTCOPY_OWNER_SCAN_ONLY=<file listing paths, one a line> restricts it to some files (a helper's own).
  it('every error constructed in src/ is of the class that owns its code', () => {
    const listFile = process.env.POSTCOPY_OWNER_SCAN_ONLY;
    const only = listFile ? new Set(readFileSync(listFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)) : undefined;
    const violations = scanTree(ROOT, 'src', only).map((v) => `${v.where}: ${v.what}`);
    expect(violations, `constructions with the wrong class:\n${violations.join('\n')}`).toEqual([]);
  });
});
