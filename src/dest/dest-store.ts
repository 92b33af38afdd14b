// Prepare's files: the present-bitmap and the image, created (or taken) for this session only. Whatever it
// created is reported even when a later step fails, so a rollback deletes exactly that and nothing else.
import { UsageError, errorFor, toPostcopyError, type ErrorCode } from '../common/errors.js';
import type { ImageWriteIo } from '../common/file-io.js';
import { hostIdentity, pathIdentity, sameFile } from '../common/image-identity.js';
import type { Logger } from '../common/logger.js';
import type { MessageOf } from '../protocol/messages.js';
import { BlockStore, type FinalCheckMode, type ImageFile } from './block-store.js';
import type { Created } from './dest-core-types.js';
import type { Fetcher } from './fetcher.js';
import { PresentBitmap } from './present-bitmap.js';

export interface StoreSetup {
  imagePath: string;
  bitmapPath: string;
  fetcher: Fetcher;
  log: Logger;
  finalCheck?: FinalCheckMode | undefined;
  io?: ImageWriteIo | undefined;
  /** Whether a file already at the image path may be used (decided at start). */
  existing: 'never' | 'empty' | 'overwrite';
  /** Size of the --fallback image, which must match S's. */
  fallbackSize?: number | undefined;
}

export type PreparedStore = { ok: true; store: BlockStore; created: Created } | { ok: false; error: unknown; created: Created };

/** Refuse an operator mistake before anything is written, run `before` (the guest's checks), then create the files. */
export function prepareStore(o: StoreSetup, begin: MessageOf<'BEGIN'>, before: () => void): PreparedStore {
  const created: Created = { image: null, bitmap: false };
  try {
    const ours = pathIdentity(o.imagePath);
    if (begin.image && begin.image.host === hostIdentity() && sameFile(ours, begin.image)) {
      throw new UsageError(
        'PC_ERR_SAME_IMAGE',
        `--image ${o.imagePath} and the source's image are one file on this host (device ${begin.image.dev}, inode ${begin.image.ino}); give the destination another --image`,
      );
    }
    if (o.fallbackSize !== undefined && o.fallbackSize !== begin.size) {
      throw new UsageError('PC_ERR_USAGE', `fallback image is ${o.fallbackSize} bytes, the source's is ${begin.size}`);
    }
    before();
    const blockCount = Math.ceil(begin.size / begin.blockSize);
    const bitmap = labelled('creating the present-bitmap', 'PC_ERR_STATE_DIR', () => PresentBitmap.create(o.bitmapPath, begin.blockSize, blockCount, o.io));
    created.bitmap = true;
    const sourceImage = begin.image && begin.image.host === hostIdentity() ? begin.image : null;
    const store = labelled('creating the image', 'PC_ERR_BACKEND', () =>
      BlockStore.create(o.imagePath, { size: begin.size, bitmap, fetcher: o.fetcher, log: o.log, finalCheck: o.finalCheck, io: o.io, existing: o.existing, notSameAs: sourceImage }),
    );
    created.image = store.file;
    return { ok: true, store, created };
  } catch (error) {
    return { ok: false, error, created };
  }
}

/** Run one step; a system error from it says which step failed (a PostcopyError passes as it is). */
export function labelled<T>(what: string, code: ErrorCode, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toPostcopyError(e, (d, opts) => errorFor(code, `${what} failed: ${d}`, opts));
  }
}

/** How D makes and reopens its store (tests inject their own). */
export interface DestStoreFactory {
  prepare(o: StoreSetup, begin: MessageOf<'BEGIN'>, before: () => void): PreparedStore;
  /** After a restart past cut-over: the session's own image and bitmap, as they are on disk. */
  reopen(o: StoreSetup, saved: { size: number; blockSize: number; file: ImageFile }): BlockStore;
}

export const FILE_STORES: DestStoreFactory = {
  prepare: prepareStore,
  reopen: (o, saved) => {
    const bitmap = PresentBitmap.load(o.bitmapPath, saved.blockSize, Math.ceil(saved.size / saved.blockSize), o.io);
    return BlockStore.reopen(o.imagePath, { size: saved.size, bitmap, fetcher: o.fetcher, log: o.log, finalCheck: o.finalCheck, io: o.io, file: saved.file });
  },
};
