// A guest's write into the block store, by the dm-clone rules (DESIGN.md §4): a block the write covers wholly
// becomes the guest's at once (a fetch in flight for it is dropped when it lands); a missing block it covers only
// partly (the first or the last) is brought in from S first, and a write of S's bytes in flight under it is waited
// for, so a late fetch never lands over guest data.
import type { BlockFetches } from './block-fetches.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { ImageHandle } from './image-file.js';
import type { BlockStoreStats } from './store-types.js';

export interface GuestWriteParts {
  geometry: BlockGeometry;
  table: BlockTable;
  image: ImageHandle;
  fetches: BlockFetches;
  stats: BlockStoreStats;
  /** Block b's data is in the image (the committer makes it durable). */
  present: (b: number) => void;
  /** The image's write failed (the local fault goes on, or a bug is thrown on). */
  diskFailed: (e: unknown) => void;
}

/** Write a non-empty range the caller has checked; rejects with the disk's own error (ENOSPC, EIO) if it fails. */
export async function writeGuest(parts: GuestWriteParts, offset: number, data: Buffer): Promise<void> {
  const { geometry: g, table } = parts;
  const first = g.blockOf(offset);
  const last = g.lastBlockOf(offset, data.length);
  // Partially covered missing blocks (only the first and last can be) must be brought in first, and S's bytes
  // being written under the range must have landed: written later, they would land over the guest's. Both
  // checked again after each wait (another write may have started meanwhile); nothing awaits between the last
  // check and the write.
  for (;;) {
    const partial = [first, last].filter((b) => !table.isPresent(b) && !table.isWriting(b) && !g.covers(b, offset, data.length));
    if (partial.length > 0) {
      await Promise.all(partial.map((b) => parts.fetches.ensure(b)));
      continue;
    }
    const writing = parts.image.settled(offset, data.length);
    if (writing === null) break;
    await writing;
  }
  try {
    parts.image.write(data, offset);
  } catch (e) {
    // The guest gets the disk's own error. Missing blocks stay missing; present ones may now hold part of the
    // write, so they are no longer S's bytes for the final check.
    for (let b = first; b <= last; b++) table.guestWriteFailed(b);
    parts.diskFailed(e);
    throw e;
  }
  parts.stats.guestBytesWritten += data.length;
  for (let b = first; b <= last; b++) {
    const wasPresent = table.isPresent(b);
    table.guestWrote(b, g.covers(b, offset, data.length));
    if (!wasPresent) parts.present(b);
  }
}
