// Makes the demo's source disk: a sparse raw image whose layout exercises every path of the migration:
// random data, runs of written zeroes, holes, and data blocks with zeroed parts. Deterministic from a seed.
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import {
  AES_BLOCK_BYTES,
  AES_KEY_BYTES,
  AES_NONCE_BYTES,
  DEMO_EXTRA_SLOTS,
  DEMO_GROUP_SLOTS as GROUP_SLOTS,
  DEMO_MAX_ZERO_SECTORS,
  DEMO_SECTOR as SECTOR,
  DEMO_SLOT_BYTES as MIB,
} from './constants.js';
import { Prng } from './prng.js';

const ZERO_MIB = Buffer.alloc(MIB);

export type RunKind = 'data' | 'zero' | 'hole';

export interface ImageRun {
  offset: number;
  length: number;
  /** data: random bytes; zero: written zeroes (allocated); hole: never written (reads as zeroes). */
  kind: RunKind;
}

export interface GeneratedImage {
  dataBytes: number;
  zeroBytes: number;
  holeBytes: number;
  /** The layout as written, adjacent runs of one kind merged, covering [0, size). */
  layout: ImageRun[];
}

export interface ImageGenOptions {
  /** fsync the image before returning. */
  fsync?: boolean;
}

/**
 * Per 8 MiB group: 4–6 MiB of random data, 1–2 MiB of written zeroes, 1–2 MiB of holes, shuffled;
 * every data MiB has a zeroed, 512-byte-aligned but not block-aligned stretch inside it (partial zero blocks).
 */
export function generateDemoImage(path: string, sizeBytes: number, seed: number, opts: ImageGenOptions = {}): GeneratedImage {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`bad image size ${sizeBytes}`);
  const keyMaterial = createHash('sha256').update(`postcopy-demo-image:${seed}`).digest();
  const key = keyMaterial.subarray(0, AES_KEY_BYTES);
  const nonce = keyMaterial.subarray(AES_KEY_BYTES, AES_KEY_BYTES + AES_NONCE_BYTES);
  const prng = new Prng(seed);
  const runs = new RunList();

  const fd = openSync(path, 'w');
  try {
    // Size first, so whatever is never written stays a hole.
    ftruncateSync(fd, sizeBytes);
    for (let groupStart = 0; groupStart < sizeBytes; groupStart += GROUP_SLOTS * MIB) {
      const kinds = groupKinds(prng);
      for (let s = 0; s < GROUP_SLOTS; s++) {
        const pos = groupStart + s * MIB;
        if (pos >= sizeBytes) break;
        const len = Math.min(MIB, sizeBytes - pos);
        const kind = kinds[s]!;
        if (kind === 'hole') {
          runs.add(pos, len, 'hole');
        } else if (kind === 'zero') {
          writeAll(fd, ZERO_MIB.subarray(0, len), pos);
          runs.add(pos, len, 'zero');
        } else {
          writeDataSlot(fd, pos, len, key, nonce, prng, runs);
        }
      }
    }
    if (opts.fsync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const layout = runs.runs;
  const sum = (k: RunKind) => layout.reduce((n, r) => (r.kind === k ? n + r.length : n), 0);
  return { dataBytes: sum('data'), zeroBytes: sum('zero'), holeBytes: sum('hole'), layout };
}

function groupKinds(prng: Prng): RunKind[] {
  const zeros = 1 + prng.nextInt(DEMO_EXTRA_SLOTS);
  const holes = 1 + prng.nextInt(DEMO_EXTRA_SLOTS);
  const kinds: RunKind[] = [];
  for (let i = 0; i < GROUP_SLOTS; i++) kinds.push(i < zeros ? 'zero' : i < zeros + holes ? 'hole' : 'data');
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = prng.nextInt(i + 1);
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  return kinds;
}

function writeDataSlot(fd: number, pos: number, len: number, key: Buffer, nonce: Buffer, prng: Prng, runs: RunList): void {
  // CTR counter = absolute offset / 16: the bytes at an offset never depend on how the image was chunked.
  const iv = Buffer.alloc(AES_BLOCK_BYTES);
  nonce.copy(iv, 0);
  iv.writeBigUInt64BE(BigInt(pos / AES_BLOCK_BYTES), AES_NONCE_BYTES);
  const data = createCipheriv('aes-128-ctr', key, iv).update(ZERO_MIB.subarray(0, len));
  // A zeroed stretch of 0.5–48 KiB at a sector boundary: it cuts 4 KiB and 64 KiB blocks part way.
  const zLen = Math.min(len, SECTOR * (1 + prng.nextInt(DEMO_MAX_ZERO_SECTORS)));
  const zAt = SECTOR * prng.nextInt(Math.max(1, Math.floor((len - zLen) / SECTOR) + 1));
  data.fill(0, zAt, zAt + zLen);
  writeAll(fd, data, pos);
  runs.add(pos, zAt, 'data');
  runs.add(pos + zAt, zLen, 'zero');
  runs.add(pos + zAt + zLen, len - zAt - zLen, 'data');
}

function writeAll(fd: number, buf: Buffer, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** Runs in offset order, adjacent runs of one kind merged. */
class RunList {
  readonly runs: ImageRun[] = [];
  add(offset: number, length: number, kind: RunKind): void {
    if (length === 0) return;
    const last = this.runs[this.runs.length - 1];
    if (last && last.kind === kind && last.offset + last.length === offset) last.length += length;
    else this.runs.push({ offset, length, kind });
  }
}
