// The contract between the agents and a guest: what the RAM sender/receiver and the phase machines need.
import type { BlockDevice } from '../common/block-device.js';

/** Definition of the simulated guest; travels in BEGIN as the persistent definition. */
export interface SimGuestSpec {
  kind: 'sim';
  seed: number;
  ramBytes: number;
  /** RAM pages (4 KiB) dirtied per second while running. */
  dirtyPagesPerSec: number;
  /** Disk I/O operations per second while running (0 = no disk I/O). */
  diskOpsPerSec: number;
  /** Fraction of disk operations that are writes, 0..1. */
  writeRatio: number;
  /**
   * Fraction of RAM in use when the guest is first started (a booted guest's RAM is mostly in use, so
   * pre-copy has real pages to move). Default 0: RAM starts all zero.
   */
  residentFraction?: number;
}

/** A guest whose RAM can be migrated and whose disk goes through a BlockDevice. */
export interface MigratableGuest {
  readonly spec: SimGuestSpec;
  /** Guest RAM; the sender reads pages from it, the receiver writes pages into it. */
  readonly ram: Buffer;
  readonly pageCount: number;
  /** Start (or resume) running: dirtying RAM and doing disk I/O on `disk`. */
  start(disk: BlockDevice): void;
  /** Stop running; resolves once no disk I/O is in flight. After this RAM no longer changes. */
  pause(): Promise<void>;
  readonly running: boolean;
  /**
   * Take the set of pages dirtied since the last call (or since start, at the first call every page
   * counts as dirty) and clear it. Sorted ascending.
   */
  takeDirtyPages(): Uint32Array;
  /** Number of pages dirty right now (without clearing). */
  dirtyPageCount(): number;
  /** Device state (CPU registers' stand-in): JSON, enough with RAM to continue exactly where it paused. */
  saveDeviceState(): Record<string, unknown>;
}
