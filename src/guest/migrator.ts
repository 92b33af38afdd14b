// The contract for a real hypervisor's guest (QEMU): its own migration stream is carried over our
// migration socket as opaque bytes, and the agents drive it through these hooks instead of the simulated
// guest's RAM rounds.
import type { GuestStreamChannel } from '../common/guest-stream-channel.js';
import type { GuestDefinition } from '../protocol/messages.js';

// The channel is the link's; named here too because both migrators take one.
export type { GuestStreamChannel };

export interface SourceGuestMigrator {
  /** Sent in BEGIN so D can prepare a matching guest. */
  readonly definition: GuestDefinition;
  /**
   * Run the hypervisor's migration over `channel` until the guest is paused here with all its state sent.
   * Rejects (guest still running here, or resumable) if the hypervisor's migration failed.
   */
  transfer(channel: GuestStreamChannel): Promise<{ pausedAt: number }>;
  /** Rollback before Finish: resume the guest here. */
  resume(): Promise<void>;
  /** After Confirm: shut the source's guest down ("shut the source down"). */
  shutdown(): Promise<void>;
}

export interface DestGuestMigrator {
  /** At Prepare: ready the destination hypervisor (incoming, paused), its disk on D's export. */
  prepare(definition: GuestDefinition, exportUris: string[]): Promise<void>;
  /** Feed the stream; resolves once the guest's state is loaded and it is ready to run (still paused). */
  receive(channel: GuestStreamChannel): Promise<void>;
  /** Finish: run the guest here. */
  start(): Promise<void>;
  /** Rollback: make sure the guest does not run here and nothing of it remains. */
  abort(): Promise<void>;
}
