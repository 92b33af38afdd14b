// A read-only view of a BlockDevice for an export that must not change the disk (--nbd-read-only):
// the server advertises NBD_FLAG_READ_ONLY and answers write-type commands EPERM before they get here;
// the view refuses them too, so no path through it can write.
import type { BlockDevice, Extent } from '../common/block-device.js';
import { NbdError } from '../common/errors.js';
import { NBD_EPERM } from './constants.js';

export class ReadOnlyDevice implements BlockDevice {
  readonly #device: BlockDevice;
  readonly readOnly = true;

  constructor(device: BlockDevice) {
    this.#device = device;
  }

  get size(): number {
    return this.#device.size;
  }

  get multiConnSafe(): boolean {
    return this.#device.multiConnSafe;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#device.read(offset, length);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#device.blockStatus(offset, length);
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#device.cache(offset, length);
  }

  /** Nothing was written through this view; the device's own writes are its to flush. */
  flush(): Promise<void> {
    return this.#device.flush();
  }

  write(): Promise<void> {
    return refuse('WRITE');
  }

  writeZeroes(): Promise<void> {
    return refuse('WRITE_ZEROES');
  }

  trim(): Promise<void> {
    return refuse('TRIM');
  }
}

function refuse(what: string): Promise<never> {
  return Promise.reject(new NbdError('NBD_ERR_REQUEST', `${what} on a read-only export`, { errno: NBD_EPERM }));
}
