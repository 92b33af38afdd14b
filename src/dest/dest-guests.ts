// The two guests behind DestGuest: the simulated guest (RAM pages into a RamReceiver, then a MigratableGuest built
// from them) and a real hypervisor's (its own stream fed to a DestGuestMigrator). Which one S's BEGIN names is
// decided here, by the definition's kind, so D's session core never looks inside a definition.
import type { BlockDevice } from '../common/block-device.js';
import { ProtocolError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { DestGuest, DestGuestFactory, DestGuestPeer, GuestFrame, IncomingGuestStream } from '../guest/dest-guest.js';
import type { DestGuestMigrator } from '../guest/migrator.js';
import type { MigratableGuest } from '../guest/types.js';
import { STREAM_CREDIT_WINDOW } from '../link/stream-channel.js';
import type { GuestDefinition, MessageOf } from '../protocol/messages.js';
import { MAX_SIM_GUEST_RAM_BYTES } from './constants.js';
import { RamReceiver } from './ram-receiver.js';

export type GuestFactory = (def: GuestDefinition, ram: Buffer, deviceState: Record<string, unknown>) => MigratableGuest;

const unexpected = (what: string): ProtocolError => new ProtocolError('PC_ERR_UNEXPECTED', what);

/** Chooses the guest for S's definition: the simulator for kind 'sim', else the hypervisor, if this D runs one. */
export function destGuestFactory(o: { createGuest?: GuestFactory | undefined; migrator?: DestGuestMigrator | undefined; log: Logger }): DestGuestFactory {
  return (def) => {
    if ((def.persistent as { kind?: unknown }).kind !== 'sim') {
      if (!o.migrator) throw unexpected('source sent a hypervisor guest but this destination runs none');
      return new HypervisorDestGuest(o.migrator, def, o.log);
    }
    if (!o.createGuest) throw unexpected('source sent a guest but this destination runs none');
    return new SimDestGuest(def, o.createGuest);
  };
}

class SimDestGuest implements DestGuest {
  readonly #def: GuestDefinition;
  readonly #create: GuestFactory;
  readonly #ram: RamReceiver;
  #peer: DestGuestPeer | null = null;
  #guest: MigratableGuest | null = null;

  constructor(def: GuestDefinition, create: GuestFactory) {
    const ramBytes = Number((def.persistent as { ramBytes?: unknown }).ramBytes);
    if (!Number.isSafeInteger(ramBytes) || ramBytes <= 0 || ramBytes > MAX_SIM_GUEST_RAM_BYTES) throw new ProtocolError('PC_ERR_MALFORMED', 'guest ramBytes');
    this.#def = def;
    this.#create = create;
    this.#ram = new RamReceiver(ramBytes);
  }

  get migratable(): MigratableGuest | null {
    return this.#guest;
  }

  async prepare(_exportUris: string[], peer: DestGuestPeer): Promise<void> {
    this.#peer = peer;
  }

  async open(): Promise<void> {
    this.#ram.grantInitial(this.#peer!);
  }

  take(frame: GuestFrame): void {
    if (frame.type === 'GUEST_STREAM') throw unexpected('GUEST_STREAM for a simulated guest');
    if (frame.type === 'RAM_PAGES') this.#ram.apply(frame, this.#peer!);
  }

  async load(final: MessageOf<'DEVICE_STATE'>): Promise<void> {
    const ours = this.#ram.digest();
    if (ours !== final.ramDigest) throw new ProtocolError('PC_ERR_DIGEST', `RAM digest ${ours.slice(0, 16)} != source's ${final.ramDigest.slice(0, 16)}`);
    this.#guest = this.#create(this.#def, this.#ram.ram, final.state);
  }

  async start(disk: BlockDevice): Promise<void> {
    this.#guest!.start(disk);
  }

  async abort(): Promise<void> {
    // Nothing ran here before Finish: the RAM buffer goes with this object.
  }
}

class HypervisorDestGuest implements DestGuest {
  readonly #m: DestGuestMigrator;
  readonly #def: GuestDefinition;
  readonly #log: Logger;
  #peer: DestGuestPeer | null = null;
  #stream: IncomingGuestStream | null = null;
  #receiving: Promise<void> | null = null;
  /** Bytes of the stream S may still send before more credit. */
  #credit = 0;

  constructor(m: DestGuestMigrator, def: GuestDefinition, log: Logger) {
    this.#m = m;
    this.#def = def;
    this.#log = log;
  }

  get migratable(): MigratableGuest | null {
    return null;
  }

  async prepare(exportUris: string[], peer: DestGuestPeer): Promise<void> {
    await this.#m.prepare(this.#def, exportUris);
    this.#peer = peer;
    this.#stream = peer.openStream();
    this.#receiving = this.#m.receive(this.#stream);
    // Observed through open() and load(); this keeps a failure before either from being unhandled.
    this.#receiving.catch(() => {});
  }

  open(): Promise<void> {
    this.#credit = STREAM_CREDIT_WINDOW;
    this.#peer!.send({ type: 'CREDIT', bytes: STREAM_CREDIT_WINDOW });
    return this.#receiving!;
  }

  take(frame: GuestFrame): void {
    if (frame.type === 'RAM_PAGES') throw unexpected('RAM_PAGES for a hypervisor guest');
    if (frame.type === 'GUEST_STREAM_END') return this.#stream?.deliverEnd();
    const n = frame.data.length;
    if (n > this.#credit) throw new ProtocolError('PC_ERR_MALFORMED', 'guest stream beyond granted credit');
    this.#credit -= n;
    const peer = this.#peer!;
    this.#stream!.deliver(frame.data).then(
      () => {
        if (peer.closed) return;
        this.#credit += n;
        peer.send({ type: 'CREDIT', bytes: n });
      },
      // The hypervisor's receive fails too, and that ends the migration (open/load): here it is only said.
      (e: unknown) => this.#log.error({ err: e }, 'destination hypervisor did not take the stream'),
    );
  }

  load(): Promise<void> {
    return this.#receiving ?? Promise.reject(unexpected('DEVICE_STATE before the hypervisor was prepared'));
  }

  start(): Promise<void> {
    return this.#m.start();
  }

  abort(): Promise<void> {
    return this.#m.abort();
  }
}
