// The simulated guest's disk traffic: PRNG-chosen reads and writes of 4 KiB..64 KiB, at most a few in
// flight, never two conflicting ones at once (so the write map always says what the disk holds).
// Writes carry the self-describing pattern; reads check every unit the guest wrote before.
import type { BlockDevice } from '../common/block-device.js';
import { backoffDelay, NO_JITTER } from '../common/retry.js';
import type { Logger } from '../common/logger.js';
import {
  DISK_RETRY_MAX_MS,
  DISK_RETRY_MIN_MS,
  ERROR_LOG_INTERVAL_MS,
  MAX_MISMATCH_LOGS,
  MAX_OP_UNITS,
  MISMATCH_LOG_EVERY,
} from './constants.js';
import type { SimGuestStats } from './guest-stats.js';
import { checkPattern, describeFound, fillPattern, PATTERN_MAX_GENERATION } from './pattern.js';
import type { Prng } from './prng.js';
import { WRITE_UNIT, type WriteMap } from './write-map.js';

/** A failed write is retried after DISK_RETRY_MIN_MS, doubling per failure up to DISK_RETRY_MAX_MS. */
const RETRY_BACKOFF = { initialMs: DISK_RETRY_MIN_MS, maxMs: DISK_RETRY_MAX_MS };


interface Op {
  write: boolean;
  first: number;
  units: number;
}

export interface DiskWorkloadOptions {
  prng: Prng;
  writeMap: WriteMap;
  stats: SimGuestStats;
  log: Logger;
  writeRatio: number;
  maxInFlight: number;
  /** Most operations that may start back to back after a stall (budget cap). */
  maxBurst: number;
  /** Failed writes still to redo, [first unit, unit count], oldest first (from the device state). */
  retries?: Array<[number, number]>;
  opSeq?: number;
  /** Operations granted but not started yet (from the device state). */
  budget?: number;
}

export class DiskWorkload {
  readonly #o: DiskWorkloadOptions;
  #disk: BlockDevice | undefined;
  #unitCount = 0;
  #active = false;
  /** Operations allowed to start now; refilled by the rate timer, capped so a stall is not followed by a burst. */
  #budget = 0;
  readonly #inFlight = new Map<Promise<void>, Op>();
  readonly #retries: Array<[number, number]>;
  #retryTimer: NodeJS.Timeout | undefined;
  /** Failed retries in a row: the next retry waits backoffDelay of it. */
  #retryAttempt = 0;
  #retrying = false;
  #lastErrorLog = 0;
  #suppressedErrors = 0;
  /** Operations started over the guest's whole life. */
  opSeq: number;

  constructor(o: DiskWorkloadOptions) {
    this.#o = o;
    this.#retries = o.retries ? o.retries.map(([a, b]) => [a, b]) : [];
    this.opSeq = o.opSeq ?? 0;
    this.#budget = o.budget ?? 0;
  }

  /** Operations granted but not started (waiting on a conflict or a free slot). */
  get budget(): number {
    return this.#budget;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  pendingRetries(): Array<[number, number]> {
    return this.#retries.map(([a, b]) => [a, b]);
  }

  start(disk: BlockDevice): void {
    this.#disk = disk;
    this.#unitCount = Math.floor(disk.size / WRITE_UNIT);
    this.#active = true;
    this.#pump();
  }

  /** Add rate-limited budget (ops) and start what it allows. */
  grant(ops: number): void {
    this.#budget = Math.min(this.#budget + ops, this.#o.maxBurst);
    this.#pump();
  }

  /** Stop starting operations; resolves once none is in flight. */
  async stop(): Promise<void> {
    this.#active = false;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight.keys()]);
  }

  #pump(): void {
    if (!this.#active || this.#unitCount === 0) return;
    if (this.#retries.length > 0) {
      // A failed write left its units undefined: redo it, alone, before the guest does anything else.
      if (this.#inFlight.size === 0 && !this.#retryTimer && !this.#retrying) {
        const [first, units] = this.#retries[0]!;
        this.#retrying = true;
        this.#o.stats.writeRetries++;
        this.#issue({ write: true, first, units }, true);
      }
      return;
    }
    while (this.#budget >= 1 && this.#inFlight.size < this.#o.maxInFlight) {
      const op = this.#nextOp();
      if (!op) return; // conflicts with one in flight: wait for it to finish
      this.#budget -= 1;
      this.#issue(op, false);
    }
  }

  /** Draw the next operation; if it conflicts with one in flight, rewind the PRNG so it is drawn again later. */
  #nextOp(): Op | undefined {
    const prng = this.#o.prng;
    const saved = prng.state();
    const write = prng.nextFloat() < this.#o.writeRatio;
    const units = 1 + prng.nextInt(Math.min(MAX_OP_UNITS, this.#unitCount));
    const first = prng.nextInt(this.#unitCount - units + 1);
    for (const other of this.#inFlight.values()) {
      const overlap = first < other.first + other.units && other.first < first + units;
      if (overlap && (write || other.write)) {
        prng.setState(saved);
        return undefined;
      }
    }
    return { write, first, units };
  }

  #issue(op: Op, isRetry: boolean): void {
    this.opSeq++;
    const run = op.write ? this.#write(op, isRetry) : this.#read(op);
    const p = run
      .catch((err: unknown) => this.#o.log.error({ err }, 'guest disk operation failed unexpectedly'))
      .finally(() => {
        this.#inFlight.delete(p);
        this.#pump();
      });
    this.#inFlight.set(p, op);
  }

  async #write(op: Op, isRetry: boolean): Promise<void> {
    const { writeMap, stats } = this.#o;
    const data = Buffer.allocUnsafe(op.units * WRITE_UNIT);
    const gens: number[] = [];
    for (let i = 0; i < op.units; i++) {
      const unit = op.first + i;
      // Each rewrite of a unit gets the next generation, so stale data names how stale it is.
      const gen = ((writeMap.get(unit) ?? 0) % PATTERN_MAX_GENERATION) + 1;
      gens.push(gen);
      fillPattern(data.subarray(i * WRITE_UNIT, (i + 1) * WRITE_UNIT), unit * WRITE_UNIT, gen);
    }
    const t0 = performance.now();
    try {
      await this.#disk!.write(op.first * WRITE_UNIT, data);
    } catch (err) {
      stats.writeErrors++;
      this.#logError('write', op, err);
      if (isRetry) {
        this.#retrying = false;
        this.#retryAttempt++;
      } else {
        this.#retries.push([op.first, op.units]);
      }
      this.#scheduleRetry();
      return;
    }
    stats.writeLatency.record(performance.now() - t0);
    // The map changes only once the data is on the device: it must describe the disk, not intentions.
    for (let i = 0; i < op.units; i++) writeMap.set(op.first + i, gens[i]!);
    stats.writes++;
    stats.bytesWritten += data.length;
    if (isRetry) {
      this.#retries.shift();
      this.#retrying = false;
      this.#retryAttempt = 0;
    }
  }

  #scheduleRetry(): void {
    if (!this.#active || this.#retryTimer) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#pump();
    }, backoffDelay(this.#retryAttempt, RETRY_BACKOFF, NO_JITTER));
    this.#retryTimer.unref();
  }

  async #read(op: Op): Promise<void> {
    const { writeMap, stats, log } = this.#o;
    const offset = op.first * WRITE_UNIT;
    const t0 = performance.now();
    let data: Buffer;
    try {
      data = await this.#disk!.read(offset, op.units * WRITE_UNIT);
    } catch (err) {
      stats.readErrors++;
      this.#logError('read', op, err);
      return;
    }
    stats.readLatency.record(performance.now() - t0);
    stats.reads++;
    stats.bytesRead += data.length;
    for (let i = 0; i < op.units; i++) {
      const unit = op.first + i;
      const gen = writeMap.get(unit);
      // Units the guest never wrote hold source data: the final verification checks those.
      if (gen === undefined) continue;
      stats.unitsVerified++;
      const slice = data.subarray(i * WRITE_UNIT, (i + 1) * WRITE_UNIT);
      const check = checkPattern(slice, unit * WRITE_UNIT, gen);
      if (!check.ok) {
        stats.readMismatches++;
        // Every mismatch is a bug worth a line, but a wholesale corruption must not drown the log.
        if (stats.readMismatches > MAX_MISMATCH_LOGS && stats.readMismatches % MISMATCH_LOG_EVERY !== 0) continue;
        const at = check.firstBadOffset! - unit * WRITE_UNIT;
        log.error(
          {
            unitOffset: unit * WRITE_UNIT,
            expectedGeneration: gen,
            firstBadOffset: check.firstBadOffset,
            foundOffset: check.foundOffset,
            foundGeneration: check.foundGeneration,
            found: describeFound(check, slice, at),
            mismatchesSoFar: stats.readMismatches,
          },
          'guest read back data it did not write',
        );
      }
    }
  }

  #logError(kind: 'read' | 'write', op: Op, err: unknown): void {
    const now = Date.now();
    if (now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS) {
      this.#suppressedErrors++;
      return;
    }
    this.#o.log.warn(
      { err, kind, offset: op.first * WRITE_UNIT, length: op.units * WRITE_UNIT, suppressed: this.#suppressedErrors },
      `guest disk ${kind} failed`,
    );
    this.#lastErrorLog = now;
    this.#suppressedErrors = 0;
  }
}
