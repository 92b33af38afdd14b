// D's image file: created (sparse, 0600) or taken over as the operator allowed, reopened after a restart only if it
// is still the same file, and the one descriptor the store's parts read, write and sync it through.
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { describeIdentity, fdIdentity, sameFile, type FileIdentity } from '../common/image-identity.js';
import { fsyncDir, openPrivate } from '../common/state-file.js';
import { imageWriteIo, readFully, readIntoFully, type ImageWriteIo } from '../common/file-io.js';
import { UsageError, type PostcopyError } from '../common/errors.js';

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

/** The open image: positional reads, writes through `io` (tests inject a failing disk), and its sync. */
export class ImageHandle {
  #fd: number;
  readonly #io: ImageWriteIo;

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
  sync(): Promise<void> {
    return this.#io.sync(this.#fd);
  }
  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
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
