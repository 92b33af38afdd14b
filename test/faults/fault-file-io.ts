// A stackable fault layer around the block store's image writes and syncs (STYLE.md 12): a disk that fills
// up (ENOSPC) or fails (EIO) on command, with errors shaped like Node's own system errors.
import { constants } from 'node:os';
import { imageWriteIo, type ImageWriteIo } from '../../src/common/file-io.js';

export function systemError(code: string, syscall: string): NodeJS.ErrnoException {
  const errno = -(constants.errno as Record<string, number>)[code]!;
  return Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall, errno });
}

export class FaultFileIo implements ImageWriteIo {
  /** Writes fail with this code while set (ENOSPC: the disk is full). */
  failWrites: string | null = null;
  /** Syncs fail with this code while set. */
  failSyncs: string | null = null;
  writes = 0;
  failedWrites = 0;
  failedSyncs = 0;
  readonly #inner: ImageWriteIo;

  constructor(inner: ImageWriteIo = imageWriteIo) {
    this.#inner = inner;
  }

  write(fd: number, data: Buffer, position: number): void {
    if (this.failWrites) {
      this.failedWrites++;
      throw systemError(this.failWrites, 'write');
    }
    this.writes++;
    this.#inner.write(fd, data, position);
  }

  async sync(fd: number): Promise<void> {
    if (this.failSyncs) {
      this.failedSyncs++;
      throw systemError(this.failSyncs, 'fdatasync');
    }
    await this.#inner.sync(fd);
  }
}
