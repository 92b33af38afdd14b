// Positional file I/O done to the end (short reads/writes are finished rather than returned): synchronous for
// urgent page-cache reads and small urgent writes, on the threadpool for bulk reads and (vectored) bulk writes
// (their page-cache work can stall the event loop for milliseconds).
import { fdatasync, read, readSync, writeSync, writev, writevSync } from 'node:fs';
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

/**
 * The same on libuv's threadpool, for bulk reads that must not hold the event loop that serves urgent requests
 * (a page-cache miss or a large copy would stall every frame behind it).
 */
export async function readIntoFullyOffLoop(fd: number, buf: Buffer, offset: number, length: number): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const n = await new Promise<number>((resolve, reject) => read(fd, buf, done, length - done, offset + done, (err, got) => (err ? reject(err) : resolve(got))));
    if (n === 0) {
      buf.fill(0, done, length);
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

/** Write every byte of `parts` at `position` with vectored positional writes (pwritev), finishing short ones. */
export function writevFully(fd: number, parts: readonly Buffer[], position: number): void {
  let rest = parts;
  let at = position;
  while (rest.length > 0) {
    const n = writevSync(fd, rest as Buffer[], at);
    at += n;
    rest = dropFront(rest, n);
  }
}

/**
 * The same on libuv's threadpool: the event loop goes on while the kernel copies the bytes into the page cache
 * (which can stall for milliseconds allocating it). The parts must not change until the promise settles.
 */
export function writevFullyAsync(fd: number, parts: readonly Buffer[], position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (rest: readonly Buffer[], at: number) => {
      if (rest.length === 0) return resolve();
      writev(fd, rest as Buffer[], at, (err, n) => (err ? reject(err) : step(dropFront(rest, n), at + n)));
    };
    step(parts, position);
  });
}

/** The parts after the first n bytes (views, no copy). */
function dropFront(parts: readonly Buffer[], n: number): readonly Buffer[] {
  let i = 0;
  while (i < parts.length && n >= parts[i]!.length) n -= parts[i++]!.length;
  if (i === parts.length) return [];
  return n === 0 ? parts.slice(i) : [parts[i]!.subarray(n), ...parts.slice(i + 1)];
}

/**
 * The writes and syncs D makes on its image and its present-bitmap, injectable so tests can make the disk fail
 * (test/faults/fault-file-io.ts) or lose what was not synced (test/faults/crash-disk.ts). Errors are Node's own
 * system errors (code ENOSPC, EIO, ...).
 */
export interface ImageWriteIo {
  write(fd: number, data: Buffer, position: number): void;
  sync(fd: number): Promise<void>;
  /** Vectored write, synchronous (urgent data: a guest waits). Absent: one `write` per part. */
  writev?(fd: number, parts: readonly Buffer[], position: number): void;
  /** Vectored write off the event loop (bulk data). Absent: the parts through `write` after a turn of the loop. */
  writevAsync?(fd: number, parts: readonly Buffer[], position: number): Promise<void>;
}

const fdatasyncAsync = promisify(fdatasync);

export const imageWriteIo: ImageWriteIo = {
  write: writeFully,
  sync: (fd) => fdatasyncAsync(fd),
  writev: writevFully,
  writevAsync: writevFullyAsync,
};
