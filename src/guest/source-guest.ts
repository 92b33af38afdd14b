// The one guest interface S's agent drives: the simulated guest (RAM rounds) and a hypervisor's guest (its own
// stream, e.g. QEMU) behind it, so S's session core never knows which one runs.
import type { BlockDevice } from '../common/block-device.js';
import type { GuestDefinition } from '../protocol/messages.js';
import type { GuestStreamChannel, SourceGuestMigrator } from './migrator.js';
import type { MigratableGuest } from './types.js';

export interface PrecopyResult {
  rounds: number;
  pagesSent: number;
  bytesSent: number;
  finalPages: number;
  /** Measured transfer rate of the last full round. */
  bandwidthBytesPerSec: number;
  converged: boolean;
  /** When the guest was paused: wall clock, ms since the Unix epoch. */
  pausedAtEpochMs: number;
}

/** What the agent lends a guest for its pre-copy: the link, as each kind of guest uses it. */
export interface PrecopyPort {
  /** A hypervisor's own stream over the migration link. */
  stream(): GuestStreamChannel;
  /** A simulated guest's RAM, sent in rounds of dirty pages by the agent's RAM sender. */
  ramRounds(guest: MigratableGuest): { precopy(): Promise<PrecopyResult>; ramDigest(): string };
}

/** The guest paused here with all its RAM sent: what DEVICE_STATE carries. */
export interface FinalState {
  precopy: PrecopyResult | null;
  state: Record<string, unknown>;
  ramDigest: string;
}

export interface SourceGuest {
  /** Sent in BEGIN so D can prepare a matching guest. */
  readonly definition: GuestDefinition | null;
  /** Before connecting: the guest runs here (if it does not already). */
  start(): void;
  /** Pre-copy through `port` until the guest is paused here with all its state sent. */
  transfer(port: PrecopyPort): Promise<FinalState>;
  /** Rollback: the guest runs here again (`migrationStarted`: a pre-copy may have begun and must be undone). */
  resume(migrationStarted: boolean): Promise<void>;
  /** After Confirm: the guest lives on D; stop it here. */
  shutdown(): Promise<void>;
}

/** The simulated guest: RAM rounds through the agent's RAM sender, its disk on `disk`. */
class SimSourceGuest implements SourceGuest {
  readonly definition: GuestDefinition | null;
  readonly #guest: MigratableGuest;
  readonly #disk: BlockDevice;
  /** The pre-copy in flight: a rollback waits for it, or its late pause would stop the guest it restarted. */
  #transfer: Promise<unknown> | null = null;

  constructor(guest: MigratableGuest, disk: BlockDevice, definition: GuestDefinition | null) {
    this.#guest = guest;
    this.#disk = disk;
    this.definition = definition;
  }

  start(): void {
    if (!this.#guest.running) this.#guest.start(this.#disk);
  }

  transfer(port: PrecopyPort): Promise<FinalState> {
    const run = (async () => {
      const sender = port.ramRounds(this.#guest);
      const precopy = await sender.precopy();
      return { precopy, state: this.#guest.saveDeviceState(), ramDigest: sender.ramDigest() };
    })();
    this.#transfer = run.catch(() => undefined);
    return run;
  }

  async resume(): Promise<void> {
    await this.#transfer;
    this.start();
  }

  async shutdown(): Promise<void> {
    // The simulated guest stays paused: the harness reads it.
  }
}

/** A hypervisor's guest: its migration stream carried over the link; rollback and shutdown are the hypervisor's. */
class HypervisorSourceGuest implements SourceGuest {
  readonly #migrator: SourceGuestMigrator;

  constructor(migrator: SourceGuestMigrator) {
    this.#migrator = migrator;
  }

  get definition(): GuestDefinition {
    return this.#migrator.definition;
  }

  start(): void {
    // The hypervisor's guest is already running; it is not ours to start.
  }

  async transfer(port: PrecopyPort): Promise<FinalState> {
    const { pausedAt } = await this.#migrator.transfer(port.stream());
    const precopy = { rounds: 0, pagesSent: 0, bytesSent: 0, finalPages: 0, bandwidthBytesPerSec: 0, converged: true, pausedAtEpochMs: pausedAt };
    return { precopy, state: { hypervisorStream: true }, ramDigest: '' };
  }

  async resume(migrationStarted: boolean): Promise<void> {
    if (migrationStarted) await this.#migrator.resume();
  }

  shutdown(): Promise<void> {
    return this.#migrator.shutdown();
  }
}

/** No guest here (a real hypervisor reaches the disk through D's export): nothing to move but the disk. */
class NoSourceGuest implements SourceGuest {
  readonly definition: GuestDefinition | null;
  constructor(definition: GuestDefinition | null) {
    this.definition = definition;
  }
  start(): void {}
  async transfer(): Promise<FinalState> {
    return { precopy: null, state: {}, ramDigest: '' };
  }
  async resume(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** The guest S migrates: a hypervisor's when there is one, else the simulated guest, else none. */
export function sourceGuest(opts: { migrator?: SourceGuestMigrator | undefined; guest: MigratableGuest | null; disk: BlockDevice; definition: GuestDefinition | null }): SourceGuest {
  if (opts.migrator) return new HypervisorSourceGuest(opts.migrator);
  if (opts.guest) return new SimSourceGuest(opts.guest, opts.disk, opts.definition);
  return new NoSourceGuest(opts.definition);
}
