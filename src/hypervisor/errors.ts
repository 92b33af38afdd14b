// The hypervisor adapter's error: QMP failures and QEMU processes that died, with a one-line detail for operators.
import { PostcopyError } from '../common/errors.js';

export class HypervisorError extends PostcopyError {}
