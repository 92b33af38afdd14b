// The hypervisor's error class lives with the others (one class per code); re-exported for the QEMU adapters.
export { HypervisorError } from '../common/errors.js';
