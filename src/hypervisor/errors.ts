// The hypervisor adapter's error: QMP failures and QEMU processes that died, with a one-line detail for operators.
import { PostcopyError, type ErrorCode } from '../common/errors.js';

export class HypervisorError extends PostcopyError {
  /** The line without the code's prefix, for wrapping into another one-line message. */
  readonly detail: string;
  constructor(code: ErrorCode, detail: string, options?: { cause?: unknown }) {
    super(code, detail, options);
    this.detail = detail;
  }
}
