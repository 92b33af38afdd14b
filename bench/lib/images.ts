// The bench's images, made once per work directory and reused while their recipe is unchanged:
// the demo's mixed layout (random data, written zero runs, holes), sparse images with 1 MiB of random data
// every 10 MiB, and a dense image holding exactly the sparse one's data ("its data alone").
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { generateDemoImage, type ImageRun } from '../../src/guest/image-gen.js';

const MIB = 1 << 20;
const RECIPE_VERSION = 1;

export interface BenchImage {
  path: string;
  kind: 'mixed' | 'sparse10' | 'dense-of-sparse10';
  size: number;
  /** Bytes that are not zero (what must travel). */
  dataBytes: number;
  /** Bytes allocated on disk. */
  allocatedBytes: number;
  /** Data runs (offset order): where a 4 KiB demand read finds bytes to fetch. */
  dataRuns: Array<{ offset: number; length: number }>;
  madeInSec: number;
}

interface Sidecar {
  version: number;
  recipe: string;
  image: BenchImage;
}

function cached(path: string, recipe: string): BenchImage | null {
  const side = `${path}.json`;
  if (!existsSync(path) || !existsSync(side)) return null;
  try {
    const s = JSON.parse(readFileSync(side, 'utf8')) as Sidecar;
    if (s.version !== RECIPE_VERSION || s.recipe !== recipe || statSync(path).size !== s.image.size) return null;
    return { ...s.image, madeInSec: 0 };
  } catch {
    return null;
  }
}

function save(image: BenchImage, recipe: string): BenchImage {
  writeFileSync(`${image.path}.json`, JSON.stringify({ version: RECIPE_VERSION, recipe, image } satisfies Sidecar));
  return image;
}

function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

/** The demo's layout: per 8 MiB, 4–6 MiB random data (with a zeroed stretch), 1–2 MiB written zeroes, 1–2 MiB holes. */
export function mixedImage(path: string, size: number, seed = 1): BenchImage {
  const recipe = `mixed:${size}:${seed}`;
  const hit = cached(path, recipe);
  if (hit) return hit;
  const t0 = performance.now();
  const g = generateDemoImage(path, size, seed);
  const dataRuns = g.layout.filter((r: ImageRun) => r.kind === 'data').map((r) => ({ offset: r.offset, length: r.length }));
  return save(
    { path, kind: 'mixed', size, dataBytes: g.dataBytes, allocatedBytes: allocated(path), dataRuns, madeInSec: (performance.now() - t0) / 1000 },
    recipe,
  );
}

function slab(seed: number, index: number): Buffer {
  const k = createHash('sha256').update(`postcopy-bench-sparse:${seed}`).digest();
  const iv = Buffer.alloc(16);
  k.copy(iv, 0, 16, 24);
  iv.writeUInt32BE(index, 12);
  return createCipheriv('aes-128-ctr', k.subarray(0, 16), iv).update(Buffer.alloc(MIB));
}

/** 1 MiB of random data at every 10 MiB boundary, holes elsewhere: 10% data. */
export function sparseImage(path: string, size: number, seed = 2): BenchImage {
  const recipe = `sparse10:${size}:${seed}`;
  const hit = cached(path, recipe);
  if (hit) return hit;
  const t0 = performance.now();
  const fd = openSync(path, 'w');
  const dataRuns: Array<{ offset: number; length: number }> = [];
  try {
    ftruncateSync(fd, size);
    for (let i = 0, at = 0; at < size; i++, at += 10 * MIB) {
      const data = slab(seed, i).subarray(0, Math.min(MIB, size - at));
      writeSync(fd, data, 0, data.length, at);
      dataRuns.push({ offset: at, length: data.length });
    }
  } finally {
    closeSync(fd);
  }
  const dataBytes = dataRuns.reduce((a, r) => a + r.length, 0);
  return save({ path, kind: 'sparse10', size, dataBytes, allocatedBytes: allocated(path), dataRuns, madeInSec: (performance.now() - t0) / 1000 }, recipe);
}

/** The same slabs as sparseImage(size, seed), back to back: the sparse image's data alone. */
export function denseOfSparse(path: string, sparseSize: number, seed = 2): BenchImage {
  const recipe = `dense-of-sparse10:${sparseSize}:${seed}`;
  const hit = cached(path, recipe);
  if (hit) return hit;
  const t0 = performance.now();
  const slabs = Math.ceil(sparseSize / (10 * MIB));
  const fd = openSync(path, 'w');
  let size = 0;
  try {
    for (let i = 0; i < slabs; i++) {
      const at = i * 10 * MIB;
      const data = slab(seed, i).subarray(0, Math.min(MIB, sparseSize - at));
      writeSync(fd, data, 0, data.length, size);
      size += data.length;
    }
  } finally {
    closeSync(fd);
  }
  return save(
    { path, kind: 'dense-of-sparse10', size, dataBytes: size, allocatedBytes: allocated(path), dataRuns: [{ offset: 0, length: size }], madeInSec: (performance.now() - t0) / 1000 },
    recipe,
  );
}
