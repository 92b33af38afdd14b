// The built-in simulated guest (DESIGN §6): RAM dirtied at a set page rate and a disk workload through a
// BlockDevice, all drawn from a seed. Paused, its RAM plus saveDeviceState() let another instance continue
// it exactly (the destination's guest after cut-over).
import type { BlockDevice } from '../common/block-device.js';
import { ProtocolError, StateError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { RAM_PAGE_SIZE } from '../protocol/constants.js';
import { DEFAULT_MAX_IN_FLIGHT, DEFAULT_TICK_MS, MAX_BURST_S, MAX_TICK_GAP_MS } from './constants.js';
import { DEVICE_STATE_KIND, DEVICE_STATE_VERSION, parseDeviceState, type SimGuestDeviceState } from './device-state.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { DiskWorkload } from './disk-workload.js';
import { createStats, type LatencySummary, type SimGuestStats } from './guest-stats.js';
import { Prng } from './prng.js';
import { RamDirtier } from './ram-dirtier.js';
import type { MigratableGuest, SimGuestSpec } from './types.js';
import { saveWriteMap, WriteMap } from './write-map.js';

export interface SimGuestOptions {
  log?: Logger;
  /** Size of the disk the guest will be started on; start() refuses a disk of another size. */
  diskSize: number;
  /** With deviceState: the migrated RAM of a paused guest to continue (spec.ramBytes long). */
  ram?: Buffer;
  deviceState?: Record<string, unknown>;
  /** Rate timer period; 5 ms keeps bursts small without costing much CPU. */
  tickMs?: number;
  /** Disk operations in flight at most. */
  maxInFlight?: number;
}

type RunState = 'stopped' | 'running' | 'pausing';

export class SimGuest implements MigratableGuest {
  readonly spec: SimGuestSpec;
  readonly ram: Buffer;
  readonly pageCount: number;
  readonly diskSize: number;
  /** Counters of this instance only (a restored guest starts at zero). */
  readonly stats: SimGuestStats = createStats();
  readonly #log: Logger;
  readonly #tickMs: number;
  readonly #ramPrng: Prng;
  readonly #diskPrng: Prng;
  readonly #bitmap: DirtyBitmap;
  readonly #dirtier: RamDirtier;
  readonly #writeMap: WriteMap;
  readonly #workload: DiskWorkload;
  #state: RunState = 'stopped';
  #timer: NodeJS.Timeout | undefined;
  #pausing: Promise<void> | undefined;
  #lastTick = 0;
  #ramCarry = 0;
  #diskBudget = 0;

  /** The destination's path: continue a guest paused elsewhere from its RAM and device state. */
  static fromMigration(
    spec: SimGuestSpec,
    ram: Buffer,
    deviceState: Record<string, unknown>,
    opts: Omit<SimGuestOptions, 'ram' | 'deviceState'>,
  ): SimGuest {
    return new SimGuest(spec, { ...opts, ram, deviceState });
  }

  constructor(spec: SimGuestSpec, opts: SimGuestOptions) {
    validateSpec(spec);
    if (!Number.isSafeInteger(opts.diskSize) || opts.diskSize < 0) throw new RangeError(`bad disk size ${opts.diskSize}`);
    if ((opts.ram === undefined) !== (opts.deviceState === undefined)) {
      throw new TypeError('a restored guest needs both ram and deviceState');
    }
    this.spec = spec;
    this.diskSize = opts.diskSize;
    this.pageCount = spec.ramBytes / RAM_PAGE_SIZE;
    this.#log = (opts.log ?? silentLogger()).child({ component: 'sim-guest' });
    this.#tickMs = opts.tickMs ?? DEFAULT_TICK_MS;

    const restored = opts.deviceState ? parseDeviceState(opts.deviceState, spec, opts.diskSize) : undefined;
    if (restored) {
      if (opts.ram!.length !== spec.ramBytes) {
        throw new ProtocolError('PC_ERR_MALFORMED', `migrated RAM is ${opts.ram!.length} bytes, spec says ${spec.ramBytes}`);
      }
      this.ram = opts.ram!;
      this.#ramPrng = Prng.fromState(restored.ramPrng);
      this.#diskPrng = Prng.fromState(restored.diskPrng);
      this.#writeMap = WriteMap.decode(restored.writeMap);
      if (this.#writeMap.size !== restored.writeMapCount) {
        throw new ProtocolError('PC_ERR_MALFORMED', `sim guest device state: write map has ${this.#writeMap.size} entries, expected ${restored.writeMapCount}`);
      }
      this.#ramCarry = restored.ramCarry;
      this.#diskBudget = restored.diskBudget % 1;
      // Everything was just transferred: nothing is dirty until the guest runs here.
      this.#bitmap = new DirtyBitmap(this.pageCount, false);
    } else {
      this.ram = Buffer.alloc(spec.ramBytes);
      // Two streams from one seed, so the disk sequence does not depend on how RAM ticks interleave.
      const master = new Prng(spec.seed);
      this.#ramPrng = new Prng(master.nextU32());
      this.#diskPrng = new Prng(master.nextU32());
      this.#writeMap = new WriteMap();
      // Nothing has been sent yet: the first takeDirtyPages() must return every page.
      this.#bitmap = new DirtyBitmap(this.pageCount, true);
    }
    this.#dirtier = new RamDirtier(this.ram, this.#ramPrng, this.#bitmap, restored?.ramSeq ?? 0);
    if (!restored && spec.residentFraction) this.#dirtier.populate(spec.residentFraction);
    this.#workload = new DiskWorkload({
      prng: this.#diskPrng,
      writeMap: this.#writeMap,
      stats: this.stats,
      log: this.#log,
      writeRatio: spec.writeRatio,
      maxInFlight: opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      // A slow disk lowers the achieved rate instead of being hit by a catch-up burst later.
      maxBurst: Math.max(opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT, spec.diskOpsPerSec * MAX_BURST_S),
      retries: restored?.retries,
      opSeq: restored?.opSeq,
      budget: restored ? Math.floor(restored.diskBudget) : 0,
    });
  }

  get running(): boolean {
    return this.#state === 'running';
  }

  start(disk: BlockDevice): void {
    if (this.#state !== 'stopped') throw new StateError('PC_ERR_STATE', `sim guest start while ${this.#state}`);
    if (disk.size !== this.diskSize) throw new RangeError(`sim guest expects a ${this.diskSize}-byte disk, got ${disk.size}`);
    this.#state = 'running';
    this.#lastTick = performance.now();
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    // The guest alone must not keep a process alive; the agents' sockets do that.
    this.#timer.unref();
    this.#workload.start(disk);
    this.#log.debug({ writeMapEntries: this.#writeMap.size }, 'sim guest running');
  }

  pause(): Promise<void> {
    // A second pause() while the first waits on the disk resolves with it, not before.
    if (this.#state === 'pausing') return this.#pausing!;
    if (this.#state !== 'running') return Promise.resolve();
    this.#state = 'pausing';
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#pausing = this.#workload.stop().then(() => {
      this.#state = 'stopped';
      this.#pausing = undefined;
      this.#log.debug({ opSeq: this.#workload.opSeq, writeMapEntries: this.#writeMap.size }, 'sim guest paused');
    });
    return this.#pausing;
  }

  #tick(): void {
    const now = performance.now();
    const dt = Math.min(now - this.#lastTick, MAX_TICK_GAP_MS) / 1000;
    this.#lastTick = now;
    const pages = this.#ramCarry + this.spec.dirtyPagesPerSec * dt;
    const whole = Math.floor(pages);
    this.#ramCarry = pages - whole;
    this.#dirtier.dirty(whole);
    this.stats.pagesDirtied += whole;
    if (this.spec.diskOpsPerSec > 0) {
      this.#diskBudget += this.spec.diskOpsPerSec * dt;
      const grant = Math.floor(this.#diskBudget);
      this.#diskBudget -= grant;
      this.#workload.grant(grant);
    }
  }

  takeDirtyPages(): Uint32Array {
    return this.#bitmap.take();
  }

  dirtyPageCount(): number {
    return this.#bitmap.count;
  }

  saveDeviceState(): Record<string, unknown> {
    if (this.#state !== 'stopped') throw new StateError('PC_ERR_STATE', 'sim guest device state saved while running');
    const s: SimGuestDeviceState = {
      kind: DEVICE_STATE_KIND,
      version: DEVICE_STATE_VERSION,
      seed: this.spec.seed,
      ramBytes: this.spec.ramBytes,
      diskSize: this.diskSize,
      ramPrng: this.#ramPrng.state(),
      diskPrng: this.#diskPrng.state(),
      ramSeq: this.#dirtier.seq,
      opSeq: this.#workload.opSeq,
      ramCarry: this.#ramCarry,
      // The whole operations the workload still owes plus the timer's fraction.
      diskBudget: this.#workload.budget + this.#diskBudget,
      retries: this.#workload.pendingRetries(),
      writeMapCount: this.#writeMap.size,
      writeMap: this.#writeMap.encode(),
    };
    return s as unknown as Record<string, unknown>;
  }

  /** Every unit the guest has written and its current generation, ascending. */
  writeMapEntries(): Array<[number, number]> {
    return this.#writeMap.entries();
  }

  /** Export the write map for verifyMigration (see loadWriteMap). */
  saveWriteMap(path: string): void {
    saveWriteMap(path, this.#writeMap);
  }

  /** Read latency p50/p99/max in ms over this instance's reads. */
  latencyPercentiles(): LatencySummary {
    return this.stats.readLatency.summary();
  }

  /** Disk operations started over the guest's whole life (continues across migration). */
  get opSeq(): number {
    return this.#workload.opSeq;
  }

  /** Failed writes waiting to be redone. */
  pendingRetries(): number {
    return this.#workload.pendingRetries().length;
  }
}

function validateSpec(spec: SimGuestSpec): void {
  if (spec.kind !== 'sim') throw new TypeError(`not a sim guest spec: ${String(spec.kind)}`);
  if (!Number.isSafeInteger(spec.ramBytes) || spec.ramBytes < 0 || spec.ramBytes % RAM_PAGE_SIZE !== 0) {
    throw new RangeError(`sim guest RAM must be a multiple of ${RAM_PAGE_SIZE} bytes, got ${spec.ramBytes}`);
  }
  if (!Number.isInteger(spec.seed)) throw new RangeError(`sim guest seed must be an integer, got ${spec.seed}`);
  for (const k of ['dirtyPagesPerSec', 'diskOpsPerSec'] as const) {
    if (!(spec[k] >= 0 && Number.isFinite(spec[k]))) throw new RangeError(`sim guest ${k} must be >= 0, got ${spec[k]}`);
  }
  if (spec.residentFraction !== undefined && !(spec.residentFraction >= 0 && spec.residentFraction <= 1)) {
    throw new RangeError(`sim guest residentFraction must be in [0, 1], got ${spec.residentFraction}`);
  }
  if (!(spec.writeRatio >= 0 && spec.writeRatio <= 1)) throw new RangeError(`sim guest writeRatio must be in [0, 1], got ${spec.writeRatio}`);
}
