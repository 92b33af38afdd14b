// A raw image file (or block device): on S the read-only SourceImage the block server serves from and, before
// cut-over, the writable BlockDevice the source's guest runs its disk on; on D a fallback image given by path.
import { closeSync, fdatasyncSync, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';
import type { BlockDevice, Extent, SourceImage } from '../common/block-device.js';
import { BackendError } from '../common/errors.js';
import { readFully, readIntoFully, readIntoFullyOffLoop, writeFully } from '../common/file-io.js';
import { fdIdentity, type FileIdentity } from '../common/image-identity.js';
import type { Logger } from '../common/logger.js';
import { MAP_ALLOCATED_SLACK_BYTES, MAP_ALLOCATED_SLACK_PER_EXTENT, MAP_TOOL, STAT_BLOCK_BYTES, SYSFS_SECTOR_BYTES, ZERO_SCAN_GRAIN } from './constants.js';
import { takeZeroMap } from './extent-map.js';
import { scanZeroRuns, type ScanHooks } from './extent-scan.js';
import type { ZeroGrains } from './zero-grains.js';

/** How the zero runs were found: an extent map and a read of the rest, or a read of everything; what was not read. */
export interface ZeroScanReport {
  method: 'map' | 'scan';
  /** Why there was no map (method 'scan'). */
  fallback?: string;
  readBytes: number;
  /** Bytes the scan did not read: the map said they are zero. */
  unreadBytes: number;
}

export interface FileImageOptions {
  writable?: boolean;
  /** Where the zero scan says how it went (which method, what it did not read). */
  log?: Logger;
  /** The extent-map tool (default qemu-img); null: always read the whole image. */
  mapTool?: string | null;
}

export class FileImage implements SourceImage, BlockDevice {
  readonly size: number;
  readonly multiConnSafe = true;
  #fd: number;
  #readOnly: boolean;
  readonly #regular: boolean;
  readonly #log: Logger | undefined;
  readonly #mapTool: string | null;

  private constructor(fd: number, size: number, readOnly: boolean, regular: boolean, opts: FileImageOptions) {
    this.#fd = fd;
    this.size = size;
    this.#readOnly = readOnly;
    this.#regular = regular;
    this.#log = opts.log;
    this.#mapTool = opts.mapTool === undefined ? MAP_TOOL : opts.mapTool;
  }

  static open(path: string, opts: FileImageOptions = {}): FileImage {
    let fd: number;
    try {
      fd = openSync(path, opts.writable ? 'r+' : 'r');
    } catch (e) {
      throw new BackendError('PC_ERR_BACKEND', `cannot open image ${path}: ${(e as Error).message}`, { cause: e });
    }
    const st = fstatSync(fd);
    return new FileImage(fd, st.isBlockDevice() ? blockDeviceSize(st) : st.size, !opts.writable, st.isFile(), opts);
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

  /** The whole map at once (prefer scanZeroRuns, which reports as it goes). */
  async extents(): Promise<Extent[]> {
    const zero: Extent[] = [];
    await this.scanZeroRuns((runs) => zero.push(...runs));
    // The map's runs come first, those found by reading after: in order, adjacent ones joined.
    zero.sort((a, b) => a.offset - b.offset);
    const out: Extent[] = [];
    let at = 0;
    for (const z of zero) {
      if (z.offset > at) out.push({ offset: at, length: z.offset - at, zero: false });
      const last = out[out.length - 1];
      if (last?.zero && last.offset + last.length === z.offset) last.length += z.length;
      else out.push({ ...z });
      at = z.offset + z.length;
    }
    if (at < this.size) out.push({ offset: at, length: this.size - at, zero: false });
    return out;
  }

  /**
   * Find the zero runs, reporting them as it goes. A regular file's holes come from the extent map at once, unread;
   * what the map calls data (it may hold written zeroes), or everything without a map, is read ahead of D's stream.
   * Called once the image no longer changes (after cut-over), so the map taken here stays true.
   */
  async scanZeroRuns(onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks): Promise<ZeroScanReport> {
    const mapped = await this.#zeroMap();
    const counts = await scanZeroRuns(
      // Off the event loop: the scan runs beside urgent requests, which must not wait for its reads.
      (buf, offset, length) => readIntoFullyOffLoop(this.#fd, buf, offset, length),
      this.size,
      onZeroRuns,
      hooks,
      mapped.map ?? undefined,
    );
    const report: ZeroScanReport = mapped.map ? { method: 'map', ...counts } : { method: 'scan', fallback: mapped.reason, ...counts };
    this.#log?.info({ ...report, imageBytes: this.size }, mapped.map ? 'zero runs found: holes from the extent map (not read), the rest read' : 'zero runs found by reading the whole image');
    return report;
  }

  /** The extent map of a regular file, or why there is none (a failed map is logged and the scan reads it all). */
  async #zeroMap(): Promise<{ map: ZeroGrains | null; reason: string }> {
    if (!this.#regular) return { map: null, reason: 'not a regular file' };
    if (this.#mapTool === null) return { map: null, reason: 'extent map turned off' };
    const started = performance.now();
    // The open file itself, through /proc: the path given at start may name another file by now.
    const r = await takeZeroMap({ tool: this.#mapTool, path: `/proc/${process.pid}/fd/${this.#fd}`, size: this.size, grain: ZERO_SCAN_GRAIN });
    if (!r.ok) return this.#noMap(r.reason);
    const st = fstatSync(this.#fd);
    if (st.size !== this.size) return this.#noMap('the image changed size while it was mapped');
    // A cross-check the tool cannot fake: the file's allocated blocks must be data to the map. A map that calls
    // allocated bytes holes is wrong (or the file is preallocated: then reading it all is what it costs anyway).
    const allocated = st.blocks * STAT_BLOCK_BYTES;
    if (allocated > r.dataBytes + MAP_ALLOCATED_SLACK_BYTES + r.extents * MAP_ALLOCATED_SLACK_PER_EXTENT) {
      return this.#noMap(`the file has ${allocated} bytes allocated but the map names only ${r.dataBytes} bytes of data (preallocated, or a wrong map)`);
    }
    this.#log?.info({ tool: this.#mapTool, extents: r.extents, zeroBytes: r.map.zeroBytes, ms: Math.round(performance.now() - started) }, 'extent map of the image taken');
    return { map: r.map, reason: '' };
  }

  #noMap(reason: string): { map: null; reason: string } {
    this.#log?.warn({ tool: this.#mapTool, reason }, 'no extent map of the image: reading all of it to find its zero runs');
    return { map: null, reason };
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
