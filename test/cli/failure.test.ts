// How a thrown error becomes the command's exit code and its one stderr line.
import { describe, expect, it } from 'vitest';
import { errorFor, type ErrorCode } from '../../src/common/errors.js';
import { EXIT } from '../../src/cli/exit-codes.js';
import { exitCodeFor, failureLine } from '../../src/cli/failure.js';

const OPERATOR_MISTAKES: ErrorCode[] = ['PC_ERR_USAGE', 'PC_ERR_STATE_DIR', 'PC_ERR_IMAGE_EXISTS', 'PC_ERR_SAME_IMAGE'];

describe('exitCodeFor', () => {
  it('an operator mistake exits 2 whatever the command', () => {
    for (const code of OPERATOR_MISTAKES) for (const cmd of ['source', 'dest', 'demo']) expect(exitCodeFor(cmd, errorFor(code, 'x')), `${cmd} ${code}`).toBe(EXIT.USAGE);
  });

  it("any other of our errors: the agents could not start (4), another command failed (1); a bug is internal (1)", () => {
    for (const code of ['PC_ERR_AUTH', 'PC_ERR_HYPERVISOR', 'PC_ERR_LINK_CLOSED', 'NBD_ERR_URI'] as ErrorCode[]) {
      expect(exitCodeFor('source', errorFor(code))).toBe(EXIT.NOT_STARTED);
      expect(exitCodeFor('dest', errorFor(code))).toBe(EXIT.NOT_STARTED);
      expect(exitCodeFor('verify', errorFor(code))).toBe(EXIT.INTERNAL);
    }
    expect(exitCodeFor('dest', new TypeError('x'))).toBe(EXIT.INTERNAL);
  });

  it('the stderr line names the code, or says internal error for a bug', () => {
    expect(failureLine('dest', errorFor('PC_ERR_USAGE', '--image is required'), false)).toBe('postcopy dest: bad command-line usage: --image is required [PC_ERR_USAGE]\n');
    expect(failureLine('dest', new TypeError('boom\nmore'), false)).toMatch(/^postcopy dest: internal error: boom \(run with/);
  });
});
