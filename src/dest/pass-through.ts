// Reads that go around the block store to S and keep nothing: all reads before Finish (S's guest is still
// changing the disk), and the missing blocks of a read while the image's disk fails.
import { CLASS_URGENT } from '../protocol/constants.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { Fetcher } from './fetcher.js';

/** Read a range from S, assembling its reply parts in place. */
export function readThrough(fetcher: Fetcher, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  return new Promise((resolve, reject) => {
    fetcher.request(offset, length, CLASS_URGENT, {
      onData: (off, data) => data.copy(out, off - offset),
      onZero: (off, len) => out.fill(0, off - offset, off - offset + len),
      onDone: () => resolve(out),
      onError: reject,
    });
  });
}

/** Present blocks from the image (`local`), each run of missing ones read through from S and not kept. */
export async function readAround(
  geometry: BlockGeometry,
  table: BlockTable,
  fetcher: Fetcher,
  local: Buffer,
  offset: number,
): Promise<Buffer> {
  const end = offset + local.length;
  const last = geometry.lastBlockOf(offset, local.length);
  const parts: Promise<void>[] = [];
  for (let b = geometry.blockOf(offset); b <= last; b++) {
    if (table.isPresent(b)) continue;
    let e = b;
    while (e < last && !table.isPresent(e + 1)) e++;
    const from = Math.max(offset, b * geometry.blockSize);
    const to = Math.min(end, (e + 1) * geometry.blockSize);
    parts.push(readThrough(fetcher, from, to - from).then((buf) => void buf.copy(local, from - offset)));
    b = e;
  }
  await Promise.all(parts);
  return local;
}
