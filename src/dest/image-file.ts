// D's image file: created (sparse, 0600) or taken over as the operator allowed, reopened after a restart only if it
// is still the same file, and the one descriptor the store's parts read, write and sync it through.
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { describeIdentity, fdIdentity, sameFile, type FileIdentity } from '../common/image-identity.js';
import { fsyncDir, openPrivate } from '../common/state-file.js';
import { imageWriteIo, readFully, readIntoFully, type ImageWriteIo } from '../common/file-io.js';
import { UsageError, type PostcopyError } from '../common/errors.js';
import type { ByteParts } from '../protocol/byte-parts.js';

/** The image file as this session found or made it. */
export interface ImageFile {
  created: boolean;
  identity: FileIdentity;
  /** Its size before this session (0 for a file it created). */
  priorSize: number;
}

export interface ImageCreateOptions {
  /** A file already at the path may be used: 'never' (default), 'empty' (only with no bytes), 'overwrite' (--force). */
  existing?: 'never' | 'empty' | 'overwrite';
  /** S's own image when it is on this host: never opened for writing. */
  notSameAs?: FileIdentity | null;
}

/** An asynchronous write in flight: its byte range, and its promise (settles once its `landed` callback ran). */
interface WriteInFlight {
  start: number;
  end: number;
  done: Promise<void>;
}

/**
 * The open image: positional reads, writes through `io` (tests inject a failing or slow disk), and its sync.
 * Bulk writes run off the event loop; the handle tracks them so a writer over the same bytes can wait for them,
 * a sync covers them, and the descriptor is closed only once none is in flight (a reused fd number must never
 * receive a late write).
 */
export class ImageHandle {
  #fd: number;
  readonly #io: ImageWriteIo;
  readonly #inflight = new Set<WriteInFlight>();
  #inflightBytes = 0;
  #closed = false;

  constructor(fd: number, io: ImageWriteIo = imageWriteIo) {
    this.#fd = fd;
    this.#io = io;
  }
  read(offset: number, length: number): Buffer {
    return readFully(this.#fd, offset, length);
  }
  readInto(buf: Buffer, offset: number, length: number): Buffer {
    return readIntoFully(this.#fd, buf, offset, length);
  }
  write(data: Buffer, position: number): void {
    this.#io.write(this.#fd, data, position);
  }
  /** The parts at `position`, synchronously (vectored when the io can). */
  writeParts(data: ByteParts, position: number): void {
    if (data.parts.length === 1) return this.write(data.parts[0]!, position);
    if (this.#io.writev) return this.#io.writev(this.#fd, data.parts, position);
    writeEach(this.#io, this.#fd, data.parts, position);
  }
  /**
   * The parts at `position`, off the event loop; `landed` is called once every byte is written (err null) or the
   * write failed (the disk's error), and only then does the write count as settled (settled, drain, sync): a
   * waiter resumes after the caller's bookkeeping. The parts must stay unchanged meanwhile (socket chunks are never
   * reused).
   */
  writePartsAsync(data: ByteParts, position: number, landed: (err: unknown) => void): void {
    if (this.#closed) throw new Error('image closed');
    const fd = this.#fd;
    const io = this.#io;
    const write = io.writevAsync
      ? io.writevAsync(fd, data.parts, position)
      : // An io without an async write (a test's fault layer): its sync writes after a turn of the loop, so the
        // block is in flight meanwhile as it would be on the threadpool.
        new Promise<void>((resolve) => setImmediate(resolve)).then(() => writeEach(io, fd, data.parts, position));
    const entry: WriteInFlight = {
      start: position,
      end: position + data.length,
      done: write.then(
        () => landed(null),
        (e: unknown) => landed(e ?? new Error('write failed')),
      ),
    };
    this.#inflight.add(entry);
    this.#inflightBytes += data.length;
    void entry.done.finally(() => {
      this.#inflight.delete(entry);
      this.#inflightBytes -= data.length;
      if (this.#closed && this.#inflight.size === 0) this.#closeFd();
    });
  }
  /** Bytes being written asynchronously now. */
  get writingBytes(): number {
    return this.#inflightBytes;
  }
  /** Settles once every asynchronous write overlapping [offset, offset+length) has returned; null when none. */
  settled(offset: number, length: number): Promise<void> | null {
    const end = offset + length;
    let waits: Promise<void>[] | null = null;
    for (const w of this.#inflight) if (w.start < end && offset < w.end) (waits ??= []).push(w.done);
    return waits ? Promise.allSettled(waits).then(noop) : null;
  }
  /** Settles once every asynchronous write issued so far has returned (whether it failed or not). */
  drain(): Promise<void> {
    return Promise.allSettled([...this.#inflight].map((w) => w.done)).then(noop);
  }
  /** fdatasync, covering every write issued before the call: those in flight are waited for first. */
  async sync(): Promise<void> {
    if (this.#inflight.size > 0) await this.drain();
    return this.#io.sync(this.#fd);
  }
  get closed(): boolean {
    return this.#closed;
  }
  /** No new writes; the descriptor closes now, or once the writes in flight have returned. */
  close(): void {
    this.#closed = true;
    if (this.#inflight.size === 0) this.#closeFd();
  }
  #closeFd(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

function noop(): void {}

/** The parts one `write` each, back to back from `position` (an io without a vectored write). */
function writeEach(io: ImageWriteIo, fd: number, parts: readonly Buffer[], position: number): void {
  let at = position;
  for (const p of parts) {
    io.write(fd, p, at);
    at += p.length;
  }
}

/**
 * Create the image: a new sparse file of `size` bytes (0600), or, when `existing` allows, the file already at
 * `path`, opened without truncation and set to `size` (the operator's file: its mode is left alone, and a
 * rollback gives it back its size). Never the file `notSameAs` (S's own image), checked on the open descriptor.
 */
export function createImage(path: string, size: number, opts: ImageCreateOptions): { fd: number; file: ImageFile } {
  let fd: number;
  let created = true;
  try {
    fd = openPrivate(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    created = false;
    fd = openSync(path, 'r+');
  }
  const identity = fdIdentity(fd);
  const priorSize = fstatSync(fd).size;
  const refuse = (err: PostcopyError) => {
    closeSync(fd);
    throw err;
  };
  // A file this call created cannot be S's (which existed before); only a file found here is compared.
  if (!created && sameFile(identity, opts.notSameAs)) {
    refuse(new UsageError('PC_ERR_SAME_IMAGE', `${path} is the source's own image (${describeIdentity(identity)} on this host); give the destination another --image`));
  }
  const existing = opts.existing ?? 'never';
  if (!created && !(existing === 'overwrite' || (existing === 'empty' && priorSize === 0))) {
    refuse(new UsageError('PC_ERR_IMAGE_EXISTS', `${path} appeared while the destination was waiting (${priorSize} bytes); it was left alone`));
  }
  // An existing file is overwritten only on --force: it takes the source's size (a rollback restores a smaller one).
  if (created || priorSize !== size) {
    // The size and (for a new file) its name must survive a power cut: a restart after cut-over finds the image
    // by both, and refuses a missing or short one rather than resume.
    ftruncateSync(fd, size);
    fsyncSync(fd);
    if (created) fsyncDir(dirname(path));
  }
  return { fd, file: { created, identity, priorSize } };
}

/** Reopen an image after a restart: refused unless it is the same file at the same size. */
export function reopenImage(path: string, size: number, file: ImageFile): number {
  const fd = openSync(path, 'r+');
  const identity = fdIdentity(fd);
  const actual = fstatSync(fd).size;
  if (!sameFile(identity, file.identity) || actual !== size) {
    closeSync(fd);
    throw new UsageError('PC_ERR_STATE_DIR', `${path} changed under the destination (${describeIdentity(identity)}, ${actual} bytes)`);
  }
  return fd;
}
