// Test images on disk: a sparse raw file with pattern data, written zeroes and holes, whose
// layout tests can check reads and extents against.
import { open } from 'node:fs/promises';
import { patternBytes } from './memory-block-device.js';

const MiB = 1024 * 1024;

export const IMAGE_SIZE = 16 * MiB;

/** [offset, length, what] of the sparse test image; everything else is a hole. */
export const IMAGE_LAYOUT: readonly [number, number, 'data' | 'zeroes'][] = [
  [0, 2 * MiB, 'data'],
  [2 * MiB, MiB, 'zeroes'],
  [8 * MiB, MiB, 'data'],
  [IMAGE_SIZE - 4096, 4096, 'data'],
];

/** The image's full contents, as a reference. */
export function imageBytes(): Buffer {
  const buf = Buffer.alloc(IMAGE_SIZE);
  IMAGE_LAYOUT.forEach(([off, len, what], i) => {
    if (what === 'data') patternBytes(off, len, i).copy(buf, off);
  });
  return buf;
}

/** Write the sparse raw image (holes left unwritten). */
export async function writeSparseImage(path: string): Promise<Buffer> {
  const bytes = imageBytes();
  const fh = await open(path, 'w');
  try {
    for (const [off, len] of IMAGE_LAYOUT) await fh.write(bytes, off, len, off);
    await fh.truncate(IMAGE_SIZE);
  } finally {
    await fh.close();
  }
  return bytes;
}

/** Ranges that are holes in the sparse image (never written). */
export function holeRanges(): [number, number][] {
  const out: [number, number][] = [];
  let pos = 0;
  for (const [off, len] of IMAGE_LAYOUT) {
    if (off > pos) out.push([pos, off - pos]);
    pos = off + len;
  }
  if (pos < IMAGE_SIZE) out.push([pos, IMAGE_SIZE - pos]);
  return out;
}
