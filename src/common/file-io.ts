// Positional synchronous file I/O done to the end: the fastest pattern for page-cache-resident images on this
// kind of machine (BASELINES.md), and short reads/writes are finished rather than returned.
import { fdatasync, readSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';

/** Read exactly `length` bytes at `offset`; past the end of the file reads as zeroes. */
export function readFully(fd: number, offset: number, length: number): Buffer {
  return readIntoFully(fd, Buffer.allocUnsafe(length), offset, length);
}

/** The same into the front of a caller's buffer (reused across calls by a scan). */
export function readIntoFully(fd: number, buf: Buffer, offset: number, length: number): Buffer {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) {
      buf.fill(0, done);
      break;
    }
    done += n;
  }
  return buf;
}

export function writeFully(fd: number, data: Buffer, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

/**
 * The writes and syncs D makes on its image and its present-bitmap, injectable so tests can make the disk fail
 * (test/faults/fault-file-io.ts) or lose what was not synced (test/faults/crash-disk.ts). Errors are Node's own
 * system errors (code ENOSPC, EIO, ...).
 */
export interface ImageWriteIo {
  write(fd: number, data: Buffer, position: number): void;
  sync(fd: number): Promise<void>;
}

const fdatasyncAsync = promisify(fdatasync);

export const imageWriteIo: ImageWriteIo = {
  write: writeFully,
  sync: (fd) => fdatasyncAsync(fd),
};
