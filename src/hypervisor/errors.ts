// The hypervisor's error class lives with the others (one class per code); re-exported for the QEMU adapters.
import { HypervisorError } from '../common/errors.js';
import { withTimeout } from '../common/retry.js';

export { HypervisorError };

/** A wait on QEMU bounded by `ms` (the one timeout race, src/common/retry.ts), failing as a HypervisorError. */
export function hypervisorWait<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withTimeout(p, ms, () => new HypervisorError('PC_ERR_HYPERVISOR', `${what} within ${ms} ms`));
}
