// What S's agent is given (the session's parameters and its adapters, each with a default) and what it returns.
import type { Duplex } from 'node:stream';
import type { BlockDevice } from '../common/block-device.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { Backoff } from '../common/retry.js';
import type { SourceGuestMigrator } from '../guest/migrator.js';
import type { PrecopyResult, SourceGuest } from '../guest/source-guest.js';
import type { MigratableGuest } from '../guest/types.js';
import type { Endpoint, TlsFiles } from '../link/connect.js';
import type { LinkOptions } from '../link/link.js';
import type { Ticket } from '../protocol/handshake.js';
import type { GuestDefinition } from '../protocol/messages.js';
import type { UrgentStage } from './urgent-stages.js';
import type { StageStats } from '../common/stage-histograms.js';
import type { BlockServerStats } from './block-server.js';
import type { SourcePhase } from './source-core-types.js';
import type { ScannableImage } from './zero-runs.js';

export interface SourceAgentOptions {
  connect: Endpoint;
  /** The image S serves blocks from. */
  image: ScannableImage & { makeReadOnly?: () => void };
  /** The same image as a writable disk for S's own guest before cut-over. */
  guestDisk?: BlockDevice;
  guest: MigratableGuest | null;
  guestDefinition: GuestDefinition | null;
  /** A real hypervisor's guest (QEMU): its own stream is carried instead of the simulated guest's RAM. */
  migrator?: SourceGuestMigrator;
  /** The guest behind one interface (default: from migrator, guest and guestDefinition). */
  sourceGuest?: SourceGuest;
  ticket: Ticket | null;
  stateDir?: string;
  /** stateDir is the default one: ours by name, so made 0700 and removed once empty. */
  stateDirIsDefault?: boolean;
  /** What the state records as this session's image (path or URI, a file's identity): a mismatch is refused. */
  imageLabel?: { image: string; identity?: { dev: number; ino: number } };
  blockSize: number;
  maxDowntimeMs: number;
  /** Give up reaching D for a new migration after this long (nothing has started yet). */
  connectTimeoutMs: number;
  /** After cut-over S keeps trying to reach D for this long (default: forever; D needs S's blocks). */
  resumeTimeoutMs?: number;
  reconnectBackoff?: Backoff;
  readAheadBytes?: number;
  /** A cap on the bulk data S sends (--max-bandwidth, or the host service's share); demand replies never wait on it. */
  bulkRate?: BulkRateLimit;
  link?: Omit<LinkOptions, 'log'>;
  /** Mutual TLS on the migration socket. */
  tls?: TlsFiles;
  /** Opens the migration socket, one attempt (tests wrap it in fault layers). */
  openSocket?: (ep: Endpoint, deadline: number) => Promise<Duplex>;
  /** The clock the core reads (ms since the epoch). */
  now?: () => number;
  log: Logger;
  events: EventSink;
}

export interface SourceResult {
  phase: SourcePhase;
  sessionId: string;
  precopy: PrecopyResult | null;
  /** Guest paused on S until D answered "running". */
  downtimeMs: number | null;
  blocks: BlockServerStats;
  /** Where S's time on D's demand reads went (received → read → handed to the socket). */
  urgentStages: Record<UrgentStage, StageStats>;
  reconnects: number;
}
