// The contract between the migration link, which carries a hypervisor's own migration stream as opaque bytes,
// and the guest adapters (QEMU's stream relay, the agents' migrators) that feed and drain it. It lives below
// both, so neither src/link nor src/guest/src/hypervisor imports the other for it.

/** One direction-pair of the hypervisor's stream, carried over the migration socket. */
export interface GuestStreamChannel {
  /** Send bytes to the other agent; resolves once they are queued within the peer's credit (backpressure). */
  write(data: Buffer): Promise<void>;
  /** Take bytes from the other agent; the returned promise (if any) holds further credit until it settles. */
  onData(handler: (data: Buffer) => Promise<void> | void): void;
  /** No more bytes from this side. */
  end(): void;
  /** Resolves when the other side ended its direction (or the link closed: then rejects). */
  readonly ended: Promise<void>;
}
