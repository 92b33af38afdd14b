// The one guest interface D's agent drives: the simulated guest and a real hypervisor (QEMU) both sit behind
// it, so D's session core never learns which kind it has, nor reads anything from an untyped definition.
import type { BlockDevice } from '../common/block-device.js';
import type { Message, MessageOf } from '../protocol/messages.js';
import type { GuestStreamChannel } from './migrator.js';
import type { MigratableGuest } from './types.js';

/** S's guest state as it arrives: the simulator's RAM pages, or a hypervisor's own stream. */
export type GuestFrame = MessageOf<'RAM_PAGES'> | MessageOf<'GUEST_STREAM'> | MessageOf<'GUEST_STREAM_END'>;

/** A hypervisor's stream arriving from S, fed frame by frame. */
export interface IncomingGuestStream extends GuestStreamChannel {
  deliver(data: Buffer): Promise<void>;
  deliverEnd(): void;
}

/** What the guest may use of the migration link: credit back to S, and a stream for a hypervisor. */
export interface DestGuestPeer {
  send(msg: Message): void;
  readonly closed: boolean;
  openStream(): IncomingGuestStream;
}

export interface DestGuest {
  /** At Prepare: ready the guest (paused), its disk on D's export. */
  prepare(exportUris: string[], peer: DestGuestPeer): Promise<void>;
  /** Open S's credit window. Rejects if the guest cannot load what S sends, found before DEVICE_STATE. */
  open(): Promise<void>;
  /** One frame of S's guest state; throws a PostcopyError for a frame S should not have sent (beyond credit, out of range). */
  take(frame: GuestFrame): void;
  /** Finish: the guest has all its state (RAM digest checked, hypervisor loaded); rejects if it cannot run. */
  load(final: MessageOf<'DEVICE_STATE'>): Promise<void>;
  /** Run it here, its disk on `disk`. */
  start(disk: BlockDevice): Promise<void>;
  /** Rollback: make sure the guest does not run here and nothing of it remains. */
  abort(): Promise<void>;
  /** The simulated guest running here (for verification), null for a hypervisor or before Finish. */
  readonly migratable: MigratableGuest | null;
}

/** Makes the guest that S's BEGIN describes; throws a PostcopyError when this destination cannot run it. */
export type DestGuestFactory = (definition: NonNullable<MessageOf<'BEGIN'>['guest']>, diskSize: number) => DestGuest;
