// The simulated guest against an in-memory disk, on fake timers so rates and sequences are exact.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StateError } from '../../src/common/errors.js';
import { checkPattern, fillPattern } from '../../src/guest/pattern.js';
import { SimGuest } from '../../src/guest/sim-guest.js';
import type { SimGuestSpec } from '../../src/guest/types.js';
import { WriteMap } from '../../src/guest/write-map.js';
import { captureLogger } from './helpers/capture-logger.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { waitUntil } from '../helpers/wait.js';

const RAM = 256 * 4096; // 1 MiB, 256 pages
const DISK = 4 << 20;

function spec(over: Partial<SimGuestSpec> = {}): SimGuestSpec {
  return { kind: 'sim', seed: 1234, ramBytes: RAM, dirtyPagesPerSec: 2000, diskOpsPerSec: 400, writeRatio: 0.5, ...over };
}

/** Every unit the guest says it wrote holds that write's pattern on the disk. */
function diskMatchesWriteMap(disk: MemoryBlockDevice, entries: Array<[number, number]>): boolean {
  return entries.every(([u, g]) => checkPattern(disk.data.subarray(u * 4096, (u + 1) * 4096), u * 4096, g).ok);
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('SimGuest', () => {
  it('dirties RAM at the configured rate, and only while running', async () => {
    const g = new SimGuest(spec({ diskOpsPerSec: 0 }), { diskSize: DISK });
    expect(g.ram.every((b) => b === 0)).toBe(true);
    g.start(new MemoryBlockDevice(DISK));
    await vi.advanceTimersByTimeAsync(500);
    await g.pause();
    // 2000 pages/s for 500 ms, give or take the last tick.
    expect(g.stats.pagesDirtied).toBeGreaterThanOrEqual(990);
    expect(g.stats.pagesDirtied).toBeLessThanOrEqual(1000);
    const before = Buffer.from(g.ram);
    await vi.advanceTimersByTimeAsync(500);
    expect(g.ram.equals(before)).toBe(true);
  });

  it('runs on real timers too', async () => {
    vi.useRealTimers();
    const g = new SimGuest(spec({ dirtyPagesPerSec: 4000, diskOpsPerSec: 200 }), { diskSize: DISK });
    const disk = new MemoryBlockDevice(DISK);
    g.start(disk);
    // Real timers drive it: wait for the work itself (the rates are checked on the fake clock above).
    await waitUntil(() => g.stats.pagesDirtied > 500 && disk.reads + disk.writes > 20, 'the guest to dirty 500 pages and do 20 disk ops', 10_000, 10);
    await g.pause();
    expect(g.running).toBe(false);
  });

  it('takeDirtyPages: every page first, then exactly the pages changed since, sorted', async () => {
    const g = new SimGuest(spec({ diskOpsPerSec: 0, dirtyPagesPerSec: 200 }), { diskSize: DISK });
    const first = g.takeDirtyPages();
    expect([...first]).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(g.dirtyPageCount()).toBe(0);
    const snapshot = Buffer.from(g.ram);
    g.start(new MemoryBlockDevice(DISK));
    await vi.advanceTimersByTimeAsync(100);
    await g.pause();
    const dirty = [...g.takeDirtyPages()];
    expect(dirty.length).toBeGreaterThan(5);
    expect(dirty).toEqual([...dirty].sort((a, b) => a - b));
    for (let p = 0; p < 256; p++) {
      const changed = !g.ram.subarray(p * 4096, (p + 1) * 4096).equals(snapshot.subarray(p * 4096, (p + 1) * 4096));
      expect(changed).toBe(dirty.includes(p));
    }
    // Dirtied pages are never all-zero; their header names the page.
    for (const p of dirty) expect(g.ram.readUInt32LE(p * 4096)).toBe(p);
    expect(g.takeDirtyPages().length).toBe(0);
  });

  it('keeps at most 4 operations in flight and pause waits for them', async () => {
    const disk = new MemoryBlockDevice(DISK);
    disk.latencyMs = 30;
    const g = new SimGuest(spec({ diskOpsPerSec: 2000 }), { diskSize: DISK });
    g.start(disk);
    await vi.advanceTimersByTimeAsync(200);
    expect(disk.maxInFlight).toBe(4);
    expect(disk.inFlight).toBeGreaterThan(0);
    let paused = 0;
    const p = g.pause().then(() => paused++);
    const again = g.pause().then(() => paused++);
    await vi.advanceTimersByTimeAsync(10);
    expect(paused).toBe(0); // both still waiting on the disk
    await vi.advanceTimersByTimeAsync(30);
    await Promise.all([p, again]);
    expect(paused).toBe(2);
    expect(disk.inFlight).toBe(0);
    const ops = disk.reads + disk.writes;
    const data = Buffer.from(disk.data);
    await vi.advanceTimersByTimeAsync(500);
    expect(disk.reads + disk.writes).toBe(ops);
    expect(disk.data.equals(data)).toBe(true);
  });

  it('issues about diskOpsPerSec operations of 4..64 KiB, reads checking what it wrote', async () => {
    const disk = new MemoryBlockDevice(1 << 20); // small disk: reads often hit written units
    const g = new SimGuest(spec({ diskOpsPerSec: 500 }), { diskSize: 1 << 20 });
    g.start(disk);
    await vi.advanceTimersByTimeAsync(1000);
    await g.pause();
    const s = g.stats;
    expect(s.reads + s.writes).toBeGreaterThanOrEqual(490);
    expect(s.reads + s.writes).toBeLessThanOrEqual(500);
    expect(s.writes / (s.reads + s.writes)).toBeGreaterThan(0.35);
    expect(s.writes / (s.reads + s.writes)).toBeLessThan(0.65);
    expect(s.bytesWritten % 4096).toBe(0);
    expect(s.bytesWritten / s.writes).toBeGreaterThanOrEqual(4096);
    expect(s.bytesWritten / s.writes).toBeLessThanOrEqual(65536);
    expect(s.unitsVerified).toBeGreaterThan(100);
    expect(s.readMismatches).toBe(0);
    expect(diskMatchesWriteMap(disk, g.writeMapEntries())).toBe(true);
    const lat = g.latencyPercentiles();
    expect(lat.count).toBe(s.reads);
    expect(lat.p50Ms).toBeLessThanOrEqual(lat.p99Ms);
    expect(lat.p99Ms).toBeLessThanOrEqual(lat.maxMs);
  });

  it('keeps up with a high op rate on a fast disk', async () => {
    const disk = new MemoryBlockDevice(DISK);
    const g = new SimGuest(spec({ diskOpsPerSec: 5000, dirtyPagesPerSec: 0 }), { diskSize: DISK });
    g.start(disk);
    await vi.advanceTimersByTimeAsync(200);
    await g.pause();
    expect(g.stats.reads + g.stats.writes).toBeGreaterThanOrEqual(980);
    expect(g.stats.reads + g.stats.writes).toBeLessThanOrEqual(1000);
  });

  it('counts and logs a read of data it did not write, naming where the data came from', async () => {
    const disk = new MemoryBlockDevice(256 * 1024);
    const { log, lines } = captureLogger('error');
    const g = new SimGuest(spec({ diskOpsPerSec: 1000, writeRatio: 0.5 }), { diskSize: disk.size, log });
    g.start(disk);
    await vi.advanceTimersByTimeAsync(200);
    await g.pause();
    const [unit, gen] = g.writeMapEntries()[0]!;
    // Behind the guest's back: the unit now holds the pattern of unit+7, same generation.
    fillPattern(disk.data.subarray(unit * 4096, (unit + 1) * 4096), (unit + 7) * 4096, gen);
    g.start(disk);
    await vi.advanceTimersByTimeAsync(1000);
    await g.pause();
    expect(g.stats.readMismatches).toBeGreaterThan(0);
    const line = lines.find((l) => l.msg === 'guest read back data it did not write')!;
    expect(line).toMatchObject({ level: 50, unitOffset: unit * 4096, foundOffset: (unit + 7) * 4096, foundGeneration: gen });
  });

  it('saves its device state and a restored guest continues exactly the same', async () => {
    const a = new SimGuest(spec(), { diskSize: DISK });
    const diskA = new MemoryBlockDevice(DISK);
    a.start(diskA);
    await vi.advanceTimersByTimeAsync(300);
    await a.pause();
    const state = JSON.parse(JSON.stringify(a.saveDeviceState()));
    expect(a.writeMapEntries().length).toBeGreaterThan(10);

    // The destination: RAM and disk as of the pause, then the same time running on each side.
    const b = SimGuest.fromMigration(spec(), Buffer.from(a.ram), state, { diskSize: DISK });
    const diskB = new MemoryBlockDevice(Buffer.from(diskA.data));
    expect(b.writeMapEntries()).toEqual(a.writeMapEntries());
    expect(b.dirtyPageCount()).toBe(0);
    expect(b.opSeq).toBe(a.opSeq);
    a.takeDirtyPages();

    a.start(diskA);
    await vi.advanceTimersByTimeAsync(300);
    await a.pause();
    b.start(diskB);
    await vi.advanceTimersByTimeAsync(300);
    await b.pause();

    expect(b.ram.equals(a.ram)).toBe(true);
    expect(diskB.data.equals(diskA.data)).toBe(true);
    expect(b.writeMapEntries()).toEqual(a.writeMapEntries());
    expect([...b.takeDirtyPages()]).toEqual([...a.takeDirtyPages()]);
    expect(b.saveDeviceState()).toEqual(a.saveDeviceState());
    expect(b.stats.readMismatches).toBe(0);
    expect(diskMatchesWriteMap(diskB, b.writeMapEntries())).toBe(true);
  });

  it('fits a 60k-entry write map in well under 1 MiB of device state', async () => {
    const g = new SimGuest(spec(), { diskSize: 1 << 30 });
    const base = g.saveDeviceState();
    const big = new WriteMap();
    for (let i = 0; big.size < 60_000; i += 3) big.set(i + (i % 7), 1 + (i % 9));
    const restored = new SimGuest(spec(), {
      diskSize: 1 << 30,
      ram: Buffer.alloc(RAM),
      deviceState: { ...base, writeMap: big.encode(), writeMapCount: big.size },
    });
    const json = JSON.stringify(restored.saveDeviceState());
    expect(json.length).toBeLessThan(1 << 20);
    expect(restored.writeMapEntries().length).toBe(60_000);
  });

  it('survives disk errors: counts them, stalls, redoes failed writes once the disk is back', async () => {
    const disk = new MemoryBlockDevice(1 << 20);
    const { log, lines } = captureLogger('warn');
    const g = new SimGuest(spec({ diskOpsPerSec: 1000, writeRatio: 0.7 }), { diskSize: disk.size, log });
    g.start(disk);
    await vi.advanceTimersByTimeAsync(100);
    disk.failWrites = true;
    disk.failReads = true;
    await vi.advanceTimersByTimeAsync(500);
    expect(g.stats.writeErrors + g.stats.readErrors).toBeGreaterThan(0);
    expect(g.running).toBe(true);
    expect(lines.some((l) => l.msg === 'guest disk write failed' || l.msg === 'guest disk read failed')).toBe(true);

    // A failed write pending at the pause travels in the device state.
    await g.pause();
    const state = g.saveDeviceState() as { retries: unknown[] };
    expect(state.retries.length).toBeGreaterThan(0);

    disk.failWrites = false;
    disk.failReads = false;
    g.start(disk);
    await vi.advanceTimersByTimeAsync(3000);
    await g.pause();
    expect(g.pendingRetries()).toBe(0);
    expect(g.stats.readMismatches).toBe(0);
    expect(diskMatchesWriteMap(disk, g.writeMapEntries())).toBe(true);
  });

  it('refuses misuse: double start, saving while running, a foreign device state', async () => {
    const g = new SimGuest(spec(), { diskSize: DISK });
    const disk = new MemoryBlockDevice(DISK);
    g.start(disk);
    expect(() => g.start(disk)).toThrow(StateError);
    expect(() => g.saveDeviceState()).toThrow(StateError);
    await g.pause();
    const state = g.saveDeviceState();
    expect(() => SimGuest.fromMigration(spec({ seed: 99 }), Buffer.from(g.ram), state, { diskSize: DISK })).toThrow(/different guest/);
    expect(() => SimGuest.fromMigration(spec(), Buffer.alloc(4096), state, { diskSize: DISK })).toThrow(/RAM/);
    expect(() => new SimGuest(spec(), { diskSize: DISK }).start(new MemoryBlockDevice(4096))).toThrow(RangeError);
  });
});
