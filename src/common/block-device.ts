// The block layer interface shared by D's block store, the NBD export and the simulated guest:
// anything that reads and writes byte ranges of one fixed-size disk.

export interface Extent {
  offset: number;
  length: number;
  /** true when the range reads as zeroes (hole or written zeroes): it never needs to travel. */
  zero: boolean;
}

/**
 * A guest read's timing, handed down by whoever received it (the NBD export): when it came in, and, set by a
 * device that had to fetch for it, what to call once the reply has been handed back (the demand-path stages).
 */
export interface ReadTrace {
  /** performance.now() when the request arrived. */
  receivedAt: number;
  answered?: (at: number) => void;
}

export interface BlockDevice {
  /** Size of the disk in bytes. */
  readonly size: number;
  /** Read exactly `length` bytes at `offset` (caller keeps it inside the disk). */
  read(offset: number, length: number, trace?: ReadTrace): Promise<Buffer>;
  /** Write `data` at `offset`; with fua, durable before the promise resolves. */
  write(offset: number, data: Buffer, opts?: { fua?: boolean }): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Zero a range (without sending data); may deallocate. */
  writeZeroes(offset: number, length: number, opts?: { fua?: boolean; noHole?: boolean }): Promise<void>;
  /** Hint that a range's contents are no longer needed; afterwards it reads as zeroes in our implementation. */
  trim(offset: number, length: number, opts?: { fua?: boolean }): Promise<void>;
  /** Allocation map of a range; may describe less than asked (at least one extent). */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /** Advisory prefetch. */
  cache(offset: number, length: number): Promise<void>;
  /** True when concurrent connections see each other's flushed writes (safe to advertise NBD multi-conn). */
  readonly multiConnSafe: boolean;
  readonly readOnly: boolean;
}

/** Read-only image a source serves from (a local file or an NBD server). */
export interface SourceImage {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** Read into the front of the caller's buffer instead (a server reusing its buffers), off the event loop; optional. */
  readInto?(buf: Buffer, offset: number, length: number): Promise<Buffer>;
  /**
   * The same, synchronously, for a guest's urgent read: a page-cache hit costs less than a hop through the thread
   * pool, where it would also queue behind bulk reads. Optional (an NBD backend has no such thing).
   */
  readIntoNow?(buf: Buffer, offset: number, length: number): Buffer;
  /** Full allocation map, zero/hole runs marked, covering [0, size) in order. */
  extents(): Promise<Extent[]>;
  close(): Promise<void>;
}
