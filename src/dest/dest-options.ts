// What a DestAgent is given and what it ends with (its public contract; every option added since has a default).
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { EventSink } from '../common/events.js';
import type { ImageWriteIo } from '../common/file-io.js';
import type { Logger } from '../common/logger.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { DestGuestMigrator } from '../guest/migrator.js';
import type { MigratableGuest } from '../guest/types.js';
import type { Endpoint, TlsFiles } from '../link/connect.js';
import type { LinkOptions } from '../link/link.js';
import type { ListenerFactory } from '../link/listener.js';
import type { DestGuestFactory } from '../guest/dest-guest.js';
import type { DestStoreFactory } from './dest-store.js';
import type { Ticket } from '../protocol/handshake.js';
import type { BlockStore, FinalCheckMode } from './block-store.js';
import type { ShownPhase } from './dest-core-types.js';
import type { DestClock } from './dest-clock.js';
import type { GuestFactory } from './dest-guests.js';
import type { DestExport } from './export-owner.js';
import type { FallbackSource } from './fetcher.js';
import type { StreamerOptions } from './streamer.js';

export interface DestAgentOptions {
  listen: Endpoint;
  imagePath: string;
  stateDir: string;
  ticket: Ticket;
  log: Logger;
  events: EventSink;
  /** Makes the guest that resumes here from S's definition, RAM and device state (none: no guest on D). */
  createGuest?: GuestFactory;
  /** The NBD export of the disk, owned by D: started at Prepare (and after a restart), stopped by close(). */
  export?: DestExport;
  /** Older form of `export`: called once the store exists, returns the export's URIs; never stopped by D. */
  onStoreReady?: (store: BlockStore) => Promise<string[]> | void;
  /** Runs a real hypervisor's guest here (QEMU), fed its own migration stream. */
  migrator?: DestGuestMigrator;
  /** windowBytes: bulk bytes in flight at most (--bulk-window); the path model sizes the window below it. */
  streamer?: Partial<StreamerOptions> & { windowBytes?: number };
  /** A cap on bulk fetching (--max-bandwidth, or the host service's share): the path's pacing stays under it; demand reads never wait on it (they spend from the same allowance, so bulk leaves them room). */
  bulkRate?: BulkRateLimit;
  /** How the final check learns D's digests (default digest: as written). */
  finalCheck?: FinalCheckMode;
  link?: Omit<LinkOptions, 'log'>;
  /** A replica or backup of S's image at cut-over, read once S has been unreachable for `afterMs`. */
  fallback?: { source: FallbackSource; afterMs: number };
  /** Mutual TLS on the migration socket: a source without a certificate from this CA is refused. */
  tls?: TlsFiles;
  /** Wrap each accepted socket (fault layers in tests). */
  wrapSocket?: (socket: Socket) => Duplex;
  /** After a rollback caused by a lost link, keep answering S's resume attempts this long so S learns of it. */
  abortGraceMs?: number;
  /** Complete but the link lost before S's CONFIRM: wait this long for S to come back (it is sent COMPLETE again), then finish anyway. */
  confirmGraceMs?: number;
  /** A non-empty file already at imagePath may be overwritten (never the source's own image). */
  force?: boolean;
  /** While S is away after cut-over, say how much exists only on S this often (default 30 s). */
  awayReportMs?: number;
  /** Told of each demand fetch's latency (a guest's access finding a block missing to the block present), in ms. */
  onDemandLatency?: (ms: number) => void;
  /** The writes and syncs of the image and the present-bitmap (tests inject a disk that fails or loses unsynced writes). */
  io?: ImageWriteIo;
  /** The clock and timers of the session (default: the system's). */
  clock?: DestClock;
  /** The migration port (default: a TCP or TLS MigrationListener on `listen`). */
  listener?: ListenerFactory;
  /** Makes the guest S's BEGIN names (default: the simulator through createGuest, a hypervisor through migrator). */
  guests?: DestGuestFactory;
  /** Creates and reopens the image and its bitmap (default: files at imagePath and in stateDir). */
  stores?: DestStoreFactory;
}

export interface DestResult {
  phase: ShownPhase;
  sessionId: string | null;
  /** From the final state's arrival to the guest running here. */
  finishMs: number | null;
  guest: MigratableGuest | null;
  store: BlockStore | null;
  resumes: number;
}
