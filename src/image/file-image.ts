// A raw image file (or block device): on S the read-only SourceImage the block server serves from and, before
// cut-over, the writable BlockDevice the source's guest runs its disk on; on D a fallback image given by path.
import { closeSync, fdatasyncSync, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';
import type { BlockDevice, Extent, SourceImage } from '../common/block-device.js';
import { BackendError } from '../common/errors.js';
import { readFully, readIntoFully, writeFully } from '../common/file-io.js';
import { readIntoFullyOffLoop } from '../common/file-io-async.js';
import { fdIdentity, type FileIdentity } from '../common/image-identity.js';
import { SYSFS_SECTOR_BYTES } from './constants.js';
import { scanZeroRuns, type ScanHooks } from './extent-scan.js';

export class FileImage implements SourceImage, BlockDevice {
  readonly size: number;
  readonly multiConnSafe = true;
  #fd: number;
  #readOnly: boolean;

  private constructor(fd: number, size: number, readOnly: boolean) {
    this.#fd = fd;
    this.size = size;
    this.#readOnly = readOnly;
  }

  static open(path: string, opts: { writable?: boolean } = {}): FileImage {
    let fd: number;
    try {
      fd = openSync(path, opts.writable ? 'r+' : 'r');
    } catch (e) {
      throw new BackendError('PC_ERR_BACKEND', `cannot open image ${path}: ${(e as Error).message}`, { cause: e });
    }
    const st = fstatSync(fd);
    return new FileImage(fd, st.isBlockDevice() ? blockDeviceSize(st) : st.size, !opts.writable);
  }

  /** Device and inode of the file: D refuses to migrate onto this very file. */
  fileIdentity(): FileIdentity {
    return fdIdentity(this.#fd);
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** After cut-over S must never change the image again. */
  makeReadOnly(): void {
    this.#readOnly = true;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.readNow(offset, length);
  }

  async readInto(buf: Buffer, offset: number, length: number): Promise<Buffer> {
    return (await readIntoFullyOffLoop(this.#fd, buf, offset, length)).subarray(0, length);
  }

  readIntoNow(buf: Buffer, offset: number, length: number): Buffer {
    return readIntoFully(this.#fd, buf, offset, length).subarray(0, length);
  }

  /** Synchronous positional read: the fastest pattern on this kind of machine (page-cache hits mostly). */
  readNow(offset: number, length: number): Buffer {
    return readFully(this.#fd, offset, length);
  }

  async write(offset: number, data: Buffer, opts?: { fua?: boolean }): Promise<void> {
    this.#checkWritable();
    writeFully(this.#fd, data, offset);
    if (opts?.fua) fdatasyncSync(this.#fd);
  }

  async flush(): Promise<void> {
    fdatasyncSync(this.#fd);
  }

  async writeZeroes(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    await this.write(offset, Buffer.alloc(length), opts);
  }

  async trim(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    await this.writeZeroes(offset, length, opts);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length: Math.min(length, this.size - offset), zero: false }];
  }

  async cache(): Promise<void> {}

  /** The whole map at once (a full read of the image: prefer scanZeroRuns, which reports as it goes). */
  async extents(): Promise<Extent[]> {
    const zero: Extent[] = [];
    await this.scanZeroRuns((runs) => zero.push(...runs));
    const out: Extent[] = [];
    let at = 0;
    for (const z of zero) {
      if (z.offset > at) out.push({ offset: at, length: z.offset - at, zero: false });
      out.push(z);
      at = z.offset + z.length;
    }
    if (at < this.size) out.push({ offset: at, length: this.size - at, zero: false });
    return out;
  }

  /** Find zero runs by reading ahead of D's stream, reporting them as it goes (no SEEK_HOLE in Node). */
  scanZeroRuns(onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks): Promise<void> {
    return scanZeroRuns(
      (buf, offset, length) => {
        readIntoFully(this.#fd, buf, offset, length);
      },
      this.size,
      onZeroRuns,
      hooks,
    );
  }

  async close(): Promise<void> {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  #checkWritable(): void {
    if (this.#readOnly) throw new BackendError('PC_ERR_BACKEND', 'image is read-only on the source after cut-over');
  }
}

/** A block device's size (fstat says 0 for one): Linux's sysfs gives it in 512-byte sectors. */
export function blockDeviceSize(st: Stats): number {
  const { major, minor } = deviceNumbers(st.rdev);
  try {
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * SYSFS_SECTOR_BYTES;
  } catch (e) {
    throw new BackendError('PC_ERR_BACKEND', `cannot learn the size of block device ${major}:${minor}: ${(e as Error).message}`, { cause: e });
  }
}

/** Major and minor of a dev_t as Linux (glibc's gnu_dev_major/minor) packs them: 12+20 bits of major, 8+24 of minor. */
function deviceNumbers(rdev: number): { major: number; minor: number } {
  const dev = BigInt(rdev);
  return {
    major: Number((dev >> 8n) & 0xfffn) | Number((dev >> 32n) & ~0xfffn),
    minor: Number(dev & 0xffn) | Number((dev >> 12n) & ~0xffn),
  };
}
