// S's data plane: what moves blocks and RAM without going through the session core per block. The block server
// of each link, the read-ahead cache the zero scan fills, the digests of what was sent, RAM credit and the
// hypervisor's stream. The core starts and stops it by effects; the agent hands it the data messages.
import { BufferPool } from '../common/buffer-pool.js';
import { ProtocolError, type PostcopyError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { PrecopyPort } from '../guest/source-guest.js';
import type { MigratableGuest } from '../guest/types.js';
import type { Link } from '../link/link.js';
import { LinkStreamChannel } from '../link/stream-channel.js';
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';
import type { Message } from '../protocol/messages.js';
import { BlockServer, type BlockServerStats } from './block-server.js';
import { READ_AHEAD_DEFAULT_BYTES, READ_BUFFERS_KEPT } from './constants.js';
import { RamCredit, RamSender } from './ram-sender.js';
import { ReadAheadCache } from './read-cache.js';
import { ScanPacer, SCAN_LEAD_BYTES } from './scan-pacer.js';
import { UrgentStages } from './urgent-stages.js';
import { SentDigests } from './sent-digests.js';
import { ZeroRuns, type ScannableImage } from './zero-runs.js';

export class SourceDataPlane {
  readonly stats: BlockServerStats = { urgentRequests: 0, bulkRequests: 0, bytesSent: 0, zeroBytesSkipped: 0 };
  /** Data bytes sent by class, across links (for progress; the summary's stats keep their fields). */
  readonly served = { demand: 0, bulk: 0 };
  readonly credit = new RamCredit();
  /** crc32 of every block as it was sent (the final check's reference; unknown blocks are read again). */
  readonly sent: SentDigests;
  readonly zeroRuns = new ZeroRuns();
  /** Where S's time on D's demand reads goes. */
  readonly urgentStages = new UrgentStages();
  readonly #image: ScannableImage;
  readonly #log: Logger;
  readonly #cache: ReadAheadCache;
  /** Read buffers of the block server and the zero scan, reused once sent. */
  readonly #readBuffers = new BufferPool(BULK_CHUNK_BYTES, READ_BUFFERS_KEPT);
  readonly #scanPacer: ScanPacer;
  #stream: LinkStreamChannel | null = null;
  readonly #bulkRate: BulkRateLimit | null;

  constructor(image: ScannableImage, blockSize: number, readAheadBytes: number | undefined, log: Logger, bulkRate?: BulkRateLimit) {
    this.#bulkRate = bulkRate ?? null;
    this.#image = image;
    this.#log = log;
    this.sent = new SentDigests(image.size, blockSize);
    this.#cache = new ReadAheadCache({ maxBytes: Math.max(readAheadBytes ?? READ_AHEAD_DEFAULT_BYTES, 2 * SCAN_LEAD_BYTES), grain: blockSize });
    this.#scanPacer = new ScanPacer(this.#readBuffers, this.#cache, image.size);
  }

  /** The block server for a new link; `imageStable` says whether what it reads may be cached. */
  serve(link: Link, imageStable: () => boolean): BlockServer {
    const server = new BlockServer(link, this.#image, this.#cache, this.#log, this.stats, this.sent, imageStable, this.#readBuffers, this.urgentStages);
    server.onBulkRequest = (end) => this.#scanPacer.noteStream(end);
    server.knownZero = (offset, length) => this.#scanPacer.isKnownZero(offset, length);
    server.onChunkRead = (offset, zero) => this.#scanPacer.noteServed(offset, zero);
    server.onDataSent = (bytes, urgent) => void (urgent ? (this.served.demand += bytes) : (this.served.bulk += bytes));
    server.bulkRate = this.#bulkRate;
    return server;
  }

  /** A data message taken (true), or one for the core (false). A throw closes the link with an ERROR. */
  handle(msg: Message, server: BlockServer, beforeBegin: boolean): boolean {
    switch (msg.type) {
      case 'BLOCK_REQ':
        if (beforeBegin) throw new ProtocolError('PC_ERR_UNEXPECTED', 'block request before BEGIN');
        server.handle(msg);
        return true;
      case 'CREDIT':
        this.credit.grant(msg.bytes);
        return true;
      case 'GUEST_STREAM':
        if (!this.#stream) throw new ProtocolError('PC_ERR_UNEXPECTED', 'guest stream without a hypervisor migration');
        void this.#stream.deliver(msg.data).catch((e) => this.#log.warn({ err: e }, 'guest stream return path failed'));
        return true;
      case 'GUEST_STREAM_END':
        this.#stream?.deliverEnd();
        return true;
      default:
        return false;
    }
  }

  /** For each of D's digests, ours as sent (undefined: never sent by this process, or outside the image). */
  sentDigests(entries: ReadonlyArray<[number, number]>): Array<number | undefined> {
    const blocks = Math.ceil(this.#image.size / this.sent.blockSize);
    return entries.map(([block]) => (block < blocks ? this.sent.get(block) : undefined));
  }

  /** The guest's pre-copy over `link`: a hypervisor's stream, or the simulated guest's RAM rounds. */
  precopyPort(link: Link, opts: { log: Logger; events: EventSink; maxDowntimeMs: () => number }): PrecopyPort {
    return {
      stream: () => (this.#stream = new LinkStreamChannel(link, this.credit)),
      ramRounds: (guest: MigratableGuest) => new RamSender({ link, guest, credit: this.credit, ...opts }),
    };
  }

  /** The pre-copy is abandoned: the stream fails and credit waiters wake to notice. */
  stopPrecopy(err: PostcopyError): void {
    this.#stream?.fail(err);
    this.credit.wake();
  }

  /** The guest is paused for good: what the cache holds of the running guest's image is stale. */
  clearCache(): void {
    this.#cache.clear();
  }

  scanZeroRuns(current: () => Link | null): Promise<void> {
    return this.zeroRuns.scan(this.#image, this.#scanPacer, this.sent, current);
  }
}
