// The extent map on real files: qemu-img's map of a sparse file made with truncate and writes finds its data, the
// scan then reads only that (holes are reported unread), and a missing, failing or lying tool leaves the scan
// reading everything: never a wrong zero run. qemu-img missing fails this file under CI=true (skips elsewhere).
import { chmodSync, closeSync, openSync, writeFileSync, writeSync, ftruncateSync, renameSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Extent } from '../../src/common/block-device.js';
import { SCAN_CHUNK, ZERO_SCAN_GRAIN } from '../../src/image/constants.js';
import { takeZeroMap } from '../../src/image/extent-map.js';
import { scanZeroRuns, type ScanHooks } from '../../src/image/extent-scan.js';
import { FileImage } from '../../src/image/file-image.js';
import { assertTools, IN_CI, skipWithout } from '../nbd/helpers/tools.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
/** Data written into the sparse file: [offset, length, byte]; a run of written zeroes too (data to the map). */
const WRITES: Array<[number, number, number]> = [
  [0, 4096, 0x11], // a partial first grain
  [5 * MiB, 3 * ZERO_SCAN_GRAIN, 0x22],
  [5 * MiB + 3 * ZERO_SCAN_GRAIN, 2 * ZERO_SCAN_GRAIN, 0], // written zeroes after data: the scan must find them
  [20 * MiB + 1000, 10, 0x33], // inside one grain, not aligned
  [40 * MiB, 4 * SCAN_CHUNK, 0], // written zeroes alone: a data extent to the map, a zero run to the scan
  [SIZE - 4096, 4096, 0x44], // the last grain
];

let dir = '';
let path = '';
const TOOL = ['qemu-img'];

function makeSparse(p: string): void {
  const fd = openSync(p, 'w');
  try {
    ftruncateSync(fd, SIZE);
    for (const [at, n, b] of WRITES) writeSync(fd, Buffer.alloc(n, b), 0, n, at);
  } finally {
    closeSync(fd);
  }
}

/** The zero runs the whole image has, grain by grain, from its contents (the answer any method must give). */
function expectedZeroGrains(): boolean[] {
  const grains = Math.ceil(SIZE / ZERO_SCAN_GRAIN);
  const zero = new Array<boolean>(grains).fill(true);
  for (const [at, n, b] of WRITES) {
    if (b === 0) continue;
    for (let g = Math.floor(at / ZERO_SCAN_GRAIN); g <= Math.floor((at + n - 1) / ZERO_SCAN_GRAIN); g++) zero[g] = false;
  }
  return zero;
}

function grainsOf(runs: Extent[]): boolean[] {
  const zero = new Array<boolean>(Math.ceil(SIZE / ZERO_SCAN_GRAIN)).fill(false);
  for (const r of runs) {
    expect(r.offset % ZERO_SCAN_GRAIN).toBe(0);
    expect(r.offset + r.length).toBeLessThanOrEqual(SIZE);
    for (let at = r.offset; at < r.offset + r.length; at += ZERO_SCAN_GRAIN) {
      expect(zero[at / ZERO_SCAN_GRAIN], `grain at ${at} reported twice`).toBe(false);
      zero[at / ZERO_SCAN_GRAIN] = true;
    }
  }
  return zero;
}

/** Hooks that count what the scan reads (the pace never holds). */
function countingHooks(): ScanHooks & { readAt: number[]; mappedAt: number[] } {
  const readAt: number[] = [];
  const mappedAt: number[] = [];
  return {
    readAt,
    mappedAt,
    buffer: () => Buffer.allocUnsafe(SCAN_CHUNK),
    read: (offset) => void readAt.push(offset),
    known: () => undefined,
    pace: () => new Promise<void>((r) => setImmediate(r)),
    mapped: (offset) => void mappedAt.push(offset),
  };
}

/** A stand-in for qemu-img: a shell script printing `stdout` (and exiting `code`). */
function fakeTool(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pc-zero-map-'));
  path = join(dir, 'sparse.img');
  makeSparse(path);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(skipWithout(TOOL))('extent map from qemu-img, on a real sparse file', () => {
  beforeAll(() => {
    if (IN_CI) assertTools(TOOL);
  });

  it('finds the data runs: every grain with data is data to the map, and most holes are zero', async () => {
    const r = await takeZeroMap({ tool: 'qemu-img', path, size: SIZE, grain: ZERO_SCAN_GRAIN });
    expect(r.ok, r.ok ? '' : r.reason).toBe(true);
    if (!r.ok) return;
    const truth = expectedZeroGrains();
    for (let g = 0; g < truth.length; g++) if (!truth[g]) expect(r.map.isZero(g), `grain ${g} holds data`).toBe(false);
    // The written zeroes are data to the map (allocated); everything never written is a hole.
    for (const [at, n] of WRITES) expect(r.map.allZero(at, n)).toBe(false);
    const written = WRITES.reduce((a, [, n]) => a + n, 0);
    expect(r.map.zeroBytes).toBeGreaterThanOrEqual(SIZE - written - WRITES.length * 2 * ZERO_SCAN_GRAIN);
  });

  it('the image scan reports the holes unread and reads only the data the map names, with the same answer as a full read', async () => {
    const image = FileImage.open(path);
    try {
      const hooks = countingHooks();
      const runs: Extent[] = [];
      const report = await image.scanZeroRuns((r) => runs.push(...r), hooks);
      expect(report.method).toBe('map');
      expect(grainsOf(runs)).toEqual(expectedZeroGrains());
      // Read: only chunks holding something written; every other chunk was not read, and told to the hooks.
      const written = new Set<number>();
      for (const [at, n] of WRITES) for (let c = Math.floor(at / SCAN_CHUNK); c <= Math.floor((at + n - 1) / SCAN_CHUNK); c++) written.add(c * SCAN_CHUNK);
      expect(new Set(hooks.readAt)).toEqual(written);
      expect(report.readBytes).toBe(written.size * SCAN_CHUNK);
      expect(report.unreadBytes).toBe(SIZE - report.readBytes);
      expect(hooks.mappedAt.length).toBe(SIZE / SCAN_CHUNK - written.size);
      for (const at of hooks.mappedAt) expect(written.has(at)).toBe(false);
      // The whole-map view agrees with a plain read of every byte.
      const plain = FileImage.open(path, { mapTool: null });
      try {
        expect(await image.extents()).toEqual(await plain.extents());
      } finally {
        await plain.close();
      }
    } finally {
      await image.close();
    }
  });

  it('says in a log line which method found the runs and how many bytes were not read', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const image = FileImage.open(path, { log });
    try {
      const report = await image.scanZeroRuns(() => {}, countingHooks());
      const line = lines.find((l) => l.method === 'map');
      expect(line, JSON.stringify(lines)).toMatchObject({ method: 'map', unreadBytes: report.unreadBytes, readBytes: report.readBytes, imageBytes: SIZE });
      expect(report.unreadBytes).toBeGreaterThan(SIZE / 2);
    } finally {
      await image.close();
    }
    lines.length = 0;
    const plain = FileImage.open(path, { log, mapTool: join(dir, 'absent-tool') });
    try {
      await plain.scanZeroRuns(() => {}, countingHooks());
    } finally {
      await plain.close();
    }
    expect(lines.find((l) => l.level === 40)).toMatchObject({ reason: expect.stringMatching(/not installed/) });
    expect(lines.find((l) => l.method === 'scan')).toMatchObject({ method: 'scan', unreadBytes: 0, readBytes: SIZE });
  });

  it('maps the open file, not whatever the path names by then', async () => {
    const p = join(dir, 'moved.img');
    makeSparse(p);
    const image = FileImage.open(p);
    try {
      // Another file (all data) takes the path: the map must still describe the file that is open.
      const other = join(dir, 'other.img');
      writeFileSync(other, Buffer.alloc(SIZE, 0x55));
      renameSync(other, p);
      const runs: Extent[] = [];
      const report = await image.scanZeroRuns((r) => runs.push(...r), countingHooks());
      expect(report.method).toBe('map');
      expect(grainsOf(runs)).toEqual(expectedZeroGrains());
    } finally {
      await image.close();
    }
  });

  it('the scan reads nothing the map calls zero (a whole-image hole map, straight into the scan)', async () => {
    const hole = fakeTool('hole', `echo '[{"start": 0, "length": ${SIZE}, "zero": true, "data": false}]'`);
    let reads = 0;
    const runs: Extent[] = [];
    const r = await takeZeroMap({ tool: hole, path, size: SIZE, grain: ZERO_SCAN_GRAIN });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const counts = await scanZeroRuns(() => void reads++, SIZE, (x) => runs.push(...x), undefined, r.map);
    expect(reads).toBe(0);
    expect(counts).toEqual({ readBytes: 0, unreadBytes: SIZE });
    expect(runs).toEqual([{ offset: 0, length: SIZE, zero: true }]);
  });
});

describe('no map, or a bad one: the scan reads it all and gives the right answer', () => {
  async function scanWith(tool: string | null): Promise<{ report: Awaited<ReturnType<FileImage['scanZeroRuns']>>; runs: Extent[]; reads: number }> {
    const image = FileImage.open(path, { mapTool: tool });
    try {
      const hooks = countingHooks();
      const runs: Extent[] = [];
      const report = await image.scanZeroRuns((r) => runs.push(...r), hooks);
      return { report, runs, reads: hooks.readAt.length };
    } finally {
      await image.close();
    }
  }

  const cases: Array<[string, () => string | null, RegExp]> = [
    ['turned off', () => null, /turned off/],
    ['not installed', () => join(dir, 'no-such-qemu-img'), /not installed/],
    ['exits non-zero', () => fakeTool('fails', `echo 'qemu-img: Could not open: Permission denied' >&2; exit 1`), /exit 1.*Permission denied/],
    ['prints garbage', () => fakeTool('garbage', `echo 'hello'`), /expected '\['/],
    ['overlapping extents', () => fakeTool('overlap', `echo '[{"start":0,"length":${SIZE},"zero":true,"data":false},{"start":0,"length":4096,"zero":false,"data":true}]'`), /past the image|overlaps/],
    ['a short map', () => fakeTool('short', `echo '[{"start":0,"length":${SIZE / 2},"zero":true,"data":false}]'`), /covers/],
    ['a map cut off by a crash', () => fakeTool('crash', `printf '[{"start":0,"length":${SIZE},"zero":true,'; kill -9 $$`), /SIGKILL/],
    // Well-formed, but it calls the file's allocated data a hole: the file's allocated blocks give it away.
    ['calling the data a hole', () => fakeTool('liar', `echo '[{"start": 0, "length": ${SIZE}, "zero": true, "data": false}]'`), /allocated/],
    ['an endless line', () => fakeTool('endless', `printf '[{"start":0,"pad":"'; exec yes`), /longer than/],
  ];
  for (const [what, tool, why] of cases) {
    it(`map tool ${what}: falls back to reading every chunk, saying why`, async () => {
      const { report, runs, reads } = await scanWith(tool());
      expect(report.method).toBe('scan');
      expect(report.fallback).toMatch(why);
      expect(reads).toBe(SIZE / SCAN_CHUNK);
      expect(report.unreadBytes).toBe(0);
      expect(grainsOf(runs)).toEqual(expectedZeroGrains());
    });
  }

  it('anything but a regular file keeps the scan (the map tool is not asked)', async () => {
    const image = FileImage.open('/dev/null', { mapTool: fakeTool('never', 'exit 3') });
    try {
      const report = await image.scanZeroRuns(() => {});
      expect(report).toMatchObject({ method: 'scan', fallback: 'not a regular file' });
    } finally {
      await image.close();
    }
  });

  it('a tool that hangs is given up after the timeout', async () => {
    const hang = fakeTool('hang', 'exec sleep 30');
    const r = await takeZeroMap({ tool: hang, path, size: SIZE, grain: ZERO_SCAN_GRAIN, timeoutMs: 200 });
    expect(r).toEqual({ ok: false, reason: expect.stringMatching(/longer than 200 ms/) });
  });
});
