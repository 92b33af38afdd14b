// CRC-32 (IEEE, the same values as zlib's) for frame checksums and block digests. Every data byte is summed on
// both sides, so speed matters: @node-rs/crc32 is SIMD (≈13 GB/s here against zlib's ≈2 GB/s). Where its prebuilt
// binary is missing for the platform, zlib's crc32 gives the same numbers, slower.
import { crc32 as zlibCrc32 } from 'node:zlib';

type Crc32 = (data: Uint8Array, initial?: number) => number;

async function loadFastCrc32(): Promise<Crc32 | null> {
  try {
    const mod = (await import('@node-rs/crc32')) as { crc32: Crc32 };
    const probe = Buffer.from('123456789');
    // The check value of CRC-32/ISO-HDLC: refuse an implementation that disagrees with zlib's.
    return (mod.crc32(probe) >>> 0) === 0xcbf43926 ? mod.crc32 : null;
  } catch {
    return null;
  }
}

const fast = await loadFastCrc32();

/** CRC-32 of `data`, continuing from `initial` (0 for a fresh sum); always unsigned. */
export function crc32(data: Uint8Array, initial = 0): number {
  return (fast ? fast(data, initial) : zlibCrc32(data, initial)) >>> 0;
}

/** Which implementation is in use (for the bench's machine facts). */
export const crc32Implementation: 'simd' | 'zlib' = fast ? 'simd' : 'zlib';
