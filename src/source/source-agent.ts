// The source agent's phase machine: Connect, Begin, Perform (RAM pre-copy and cut-over), then serve blocks
// until D's COMPLETE, Confirm, exit. After the final state is sent it never guesses: a lost link means
// reconnect and ask D. Before that, any failure rolls back and the guest keeps running here.
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { BlockDevice, Extent, SourceImage } from '../common/block-device.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { ERROR_CODES, LinkClosedError, PostcopyError, ProtocolError, StateError, TimeoutError, UsageError, isPostcopyError, type ErrorCode } from '../common/errors.js';
import { sourceImageIdentity } from '../common/image-identity.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { SourceStateDir } from './source-state.js';
import { backoffDelay, connectWithRetry, type Backoff, type Endpoint, type TlsFiles } from '../link/connect.js';
import { handshakeAsSource, type HandshakeResult, type SessionKeys } from '../link/handshake.js';
import { Link, type LinkOptions } from '../link/link.js';
import { MAX_EXTENTS_PER_FRAME, MAX_MISMATCH_BLOCKS } from '../protocol/constants.js';
import { crc32 } from '../common/crc32.js';
import type { Ticket } from '../protocol/handshake.js';
import type { GuestDefinition, Message, ZeroRun } from '../protocol/messages.js';
import type { MigratableGuest } from '../guest/types.js';
import type { SourceGuestMigrator } from '../guest/migrator.js';
import { LinkStreamChannel } from '../link/stream-channel.js';
import { BlockServer, type BlockServerStats } from './block-server.js';
import { RamCredit, RamSender, type PrecopyResult } from './ram-sender.js';
import { ReadAheadCache } from './read-cache.js';
import { ScanPacer, SCAN_LEAD_BYTES } from './scan-pacer.js';
import type { ScanHooks } from './extent-scan.js';
import { BufferPool } from '../common/buffer-pool.js';
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';
import { SentDigests } from './sent-digests.js';

export type SourcePhase = 'connecting' | 'begin' | 'perform' | 'awaiting-finish' | 'postcopy' | 'confirmed' | 'rolled-back';

/** D's digests as they arrive: how many, those that differ from what we sent, those we never sent. */
interface DigestTally {
  received: number;
  bad: number[];
  unknown: Array<[number, number]>;
}
const newTally = (): DigestTally => ({ received: 0, bad: [], unknown: [] });

/** Read buffers kept for reuse: the bulk queue, the socket's high-water mark and the scan's lead in flight. */
const READ_BUFFERS_KEPT = 64;

const TRANSITIONS: Record<SourcePhase, SourcePhase[]> = {
  connecting: ['begin', 'rolled-back'],
  begin: ['perform', 'rolled-back'],
  perform: ['awaiting-finish', 'rolled-back'],
  'awaiting-finish': ['postcopy', 'rolled-back'],
  postcopy: ['confirmed'],
  confirmed: [],
  'rolled-back': [],
};

export interface SourceAgentOptions {
  connect: Endpoint;
  /** The image S serves blocks from. */
  image: SourceImage & { makeReadOnly?: () => void; scanZeroRuns?: (onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks) => Promise<void> };
  /** The same image as a writable disk for S's own guest before cut-over. */
  guestDisk?: BlockDevice;
  guest: MigratableGuest | null;
  guestDefinition: GuestDefinition | null;
  /** A real hypervisor's guest (QEMU): its own stream is carried instead of the simulated guest's RAM. */
  migrator?: SourceGuestMigrator;
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
  link?: Omit<LinkOptions, 'log'>;
  /** Mutual TLS on the migration socket. */
  tls?: TlsFiles;
  /** Opens the migration socket (tests wrap it in fault layers). */
  openSocket?: (ep: Endpoint, deadline: number) => Promise<Duplex>;
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
  reconnects: number;
}

/** Phases in which the guest still runs (or is about to run again) here: a stop request aborts the migration. */
const BEFORE_CUTOVER: readonly SourcePhase[] = ['connecting', 'begin', 'perform'];

export class SourceAgent {
  readonly #o: SourceAgentOptions;
  readonly #log: Logger;
  #phase: SourcePhase = 'connecting';
  #keys: SessionKeys | null = null;
  #link: Link | null = null;
  #blockServer: BlockServer | null = null;
  readonly #cache: ReadAheadCache;
  /** Read buffers of the block server and the zero scan, reused once sent. */
  readonly #readBuffers = new BufferPool(BULK_CHUNK_BYTES, READ_BUFFERS_KEPT);
  readonly #scanPacer: ScanPacer;
  readonly #credit = new RamCredit();
  readonly #blockStats: BlockServerStats = { urgentRequests: 0, bulkRequests: 0, bytesSent: 0, zeroBytesSkipped: 0 };
  #prepared: Deferred<string> = deferred();
  #finish: Deferred<{ running: boolean; error?: string }> = deferred();
  #complete: Deferred<void> = deferred();
  /** Zero runs found so far, and whether the scan for them is done. */
  readonly #zeroRuns: ZeroRun[] = [];
  #zeroScan: 'idle' | 'running' | 'done' = 'idle';
  #stream: LinkStreamChannel | null = null;
  /** crc32 of every block as it was sent (the final check's reference; unknown blocks are read again). */
  readonly #sent: SentDigests;
  /** D's digests, checked as they arrive before its COMPLETE: only what needs a look at the image is kept. */
  #digests: DigestTally = newTally();
  #reconnects = 0;
  readonly #state: SourceStateDir | null;
  /** Rejected by abort(): every wait before cut-over races it, so a stop request rolls back at once. */
  readonly #abort: Deferred<never> = deferred();
  #abortRequested = false;
  /** close() was called: no more reconnecting. */
  #closed = false;

  constructor(opts: SourceAgentOptions) {
    this.#o = opts;
    this.#state = opts.stateDir ? new SourceStateDir(opts.stateDir, opts.stateDirIsDefault ?? false) : null;
    this.#abort.promise.catch(() => {});
    this.#log = opts.log.child({ role: 'source' });
    this.#sent = new SentDigests(opts.image.size, opts.blockSize);
    this.#cache = new ReadAheadCache({ maxBytes: Math.max(opts.readAheadBytes ?? 32 * 1024 * 1024, 2 * SCAN_LEAD_BYTES), grain: opts.blockSize });
    this.#scanPacer = new ScanPacer(this.#readBuffers, this.#cache, opts.image.size);
  }

  get phase(): SourcePhase {
    return this.#phase;
  }
  /** The phase a rollback happened in ('connecting' means nothing was started on D). */
  get failedInPhase(): SourcePhase | null {
    return this.#failedInPhase;
  }
  #failedInPhase: SourcePhase | null = null;

  /** Whether the guest may be running on D now (the final state was sent): S must then not go away. */
  get pastCutover(): boolean {
    return this.#phase === 'awaiting-finish' || this.#phase === 'postcopy';
  }

  /**
   * Bytes of the image D may not hold yet, which exist only here: every block this process has neither sent
   * nor found to be zero (an upper bound: D's guest may have overwritten some, and a restarted S starts at all).
   */
  get bytesOnlyHere(): number {
    return this.#o.image.size - this.#sent.knownBytes;
  }

  /**
   * A stop request (Ctrl-C, SIGTERM). Before cut-over: abort, roll back (D is told, the guest goes on here),
   * and run() rejects with RolledBackError at once; returns true. After it: refused (false), the caller decides.
   */
  abort(reason: string): boolean {
    if (!BEFORE_CUTOVER.includes(this.#phase)) return false;
    this.#abortRequested = true;
    this.#abort.reject(new ProtocolError('PC_ERR_ROLLBACK', reason));
    return true;
  }

  /** Stop serving after cut-over, keeping the state dir for a restart (the caller exits 5). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#link?.close();
    await this.#o.image.close();
  }

  async run(): Promise<SourceResult> {
    const label = this.#o.imageLabel;
    const saved = this.#state?.load({ ...(label ?? {}), size: this.#o.image.size }) ?? null;
    if (saved) {
      // Restarted after cut-over: the guest is (or may be) on D; only D can tell. Serve until COMPLETE.
      this.#keys = { sessionId: saved.sessionId, resumeKey: Buffer.from(saved.resumeKey, 'hex') };
      this.#phase = saved.phase as SourcePhase;
      this.#o.image.makeReadOnly?.();
      this.#log.info({ sessionId: saved.sessionId, phase: saved.phase }, 'restarted after cut-over; resuming session');
      this.#o.events.emit('phase', { phase: this.#phase, restarted: true });
      return this.#afterCutover(null, null);
    }
    return this.#fresh();
  }

  async #fresh(): Promise<SourceResult> {
    const { guest } = this.#o;
    if (guest && !guest.running) guest.start(this.#o.guestDisk ?? (this.#o.image as unknown as BlockDevice));
    this.#o.events.emit('phase', { phase: 'connecting' });
    let precopy: PrecopyResult | null = null;
    try {
      const { link, hs } = await this.#orAbort(this.#connectFresh(Date.now() + this.#o.connectTimeoutMs));
      this.#keys = { sessionId: hs.sessionId, resumeKey: hs.resumeKey };
      this.#log.info({ sessionId: hs.sessionId, version: hs.version }, 'connected and authenticated');
      this.#attach(link);
      this.#to('begin');
      const cookie = randomBytes(8).toString('hex');
      // With our image's identity: D refuses to write over it (the same file reached through another path).
      const image = sourceImageIdentity(this.#o.image);
      link.send({ type: 'BEGIN', guest: this.#o.migrator?.definition ?? this.#o.guestDefinition, size: this.#o.image.size, blockSize: this.#o.blockSize, cookie, image });
      await this.#orAbort(raceLink(this.#prepared.promise, link, 60_000, 'PREPARED'));
      this.#to('perform');
      let state: Record<string, unknown> = {};
      let ramDigest = '';
      if (this.#o.migrator) {
        this.#stream = new LinkStreamChannel(link, this.#credit);
        const { pausedAt } = await this.#orAbort(this.#o.migrator.transfer(this.#stream));
        precopy = { rounds: 0, pagesSent: 0, bytesSent: 0, finalPages: 0, bandwidth: 0, converged: true, pausedAt };
        state = { hypervisorStream: true };
      } else if (guest) {
        const sender = new RamSender({ link, guest, credit: this.#credit, log: this.#log, events: this.#o.events, maxDowntimeMs: this.#o.maxDowntimeMs });
        precopy = await this.#orAbort(sender.precopy());
        state = guest.saveDeviceState();
        ramDigest = sender.ramDigest();
      }
      if (link.closed) throw link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED');
      // The guest is paused here for good (unless rolled back): from now on the image is what D must end with.
      this.#cache.clear();
      this.#to('awaiting-finish');
      link.send({ type: 'DEVICE_STATE', state, ramDigest });
    } catch (e) {
      return this.#rollback(e, precopy);
    }
    return this.#afterCutover(precopy, precopy?.pausedAt ?? Date.now());
  }

  /** From the moment the final state is sent: learn D's answer (reconnecting if need be), then serve until COMPLETE. */
  async #afterCutover(precopy: PrecopyResult | null, pausedAt: number | null): Promise<SourceResult> {
    let downtimeMs: number | null = null;
    for (;;) {
      if (this.#closed) throw new LinkClosedError('PC_ERR_LINK_CLOSED', 'source stopped');
      const link = this.#link;
      if (link && !link.closed) {
        if (this.#phase === 'awaiting-finish') {
          const answer = await Promise.race([this.#finish.promise, closed(link)]);
          if (answer === 'closed') continue;
          if (!answer.running) return this.#rollback(new ProtocolError('PC_ERR_ROLLBACK', `destination failed: ${answer.error ?? 'unknown'}`), precopy);
          if (pausedAt !== null) downtimeMs = Date.now() - pausedAt;
          this.#enterPostcopy(link, downtimeMs);
        }
        const done = await Promise.race([this.#complete.promise.then(() => 'complete' as const), closed(link)]);
        if (done === 'complete') break;
        continue;
      }
      const resumed = await this.#resume();
      if (this.#phase === 'awaiting-finish') {
        if (resumed === 'postcopy' || resumed === 'complete' || resumed === 'confirmed') {
          this.#enterPostcopy(this.#link!, null);
        } else if (resumed === 'aborted' || resumed === 'prepared' || resumed === 'receiving-ram') {
          return this.#rollback(new ProtocolError('PC_ERR_ROLLBACK', `destination is in phase ${resumed}, not running the guest`), precopy);
        }
      } else if (this.#link) {
        this.#sendExtents(this.#link);
      }
    }
    this.#to('confirmed');
    this.#state?.remove();
    this.#o.events.emit('complete', { ...this.#blockStats });
    this.#log.info({ ...this.#blockStats }, 'destination complete; confirmed; source released');
    this.#link?.close();
    await this.#o.image.close();
    await this.#o.migrator?.shutdown();
    return { phase: this.#phase, sessionId: this.#keys!.sessionId, precopy, downtimeMs, blocks: this.#blockStats, reconnects: this.#reconnects };
  }

  #enterPostcopy(link: Link, downtimeMs: number | null): void {
    this.#to('postcopy');
    this.#o.image.makeReadOnly?.();
    this.#save();
    this.#o.events.emit('cutover', { downtimeMs });
    this.#log.info({ downtimeMs }, 'guest running on destination; serving blocks');
    this.#sendExtents(link);
  }

  /** Reconnect with backoff and resume the session; returns D's phase. */
  async #resume(): Promise<string> {
    const deadline = Date.now() + (this.#o.resumeTimeoutMs ?? Infinity);
    // Said once per loss: this process must stay up, it holds what D still lacks.
    this.#log.warn(
      { phase: this.#phase, bytesOnlySource: this.bytesOnlyHere },
      'link to the destination lost after the final state was sent: the guest runs (or may run) there, and the bytes not yet moved exist only here; reconnecting until it is back',
    );
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new LinkClosedError('PC_ERR_LINK_CLOSED', 'source stopped');
      this.#o.events.emit('link', { state: 'reconnecting', attempt });
      try {
        const link = await this.#open(deadline);
        const hs = await handshakeAsSource(link, this.#o.ticket, this.#keys);
        this.#reconnects++;
        this.#log.info({ destPhase: hs.destPhase, attempt }, 'session resumed');
        this.#o.events.emit('link', { state: 'resumed', destPhase: hs.destPhase });
        this.#attach(link);
        return hs.destPhase;
      } catch (e) {
        if (isPostcopyError(e) && e.code === 'PC_ERR_AUTH') throw e;
        if (Date.now() > deadline) throw e;
        this.#log.warn({ err: e, attempt }, 'resume failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
  }

  /**
   * Reach D and authenticate a new session. A destination turning us away because strangers fill its handshake
   * slots (PC_ERR_BUSY) is tried again until the deadline: they are cut within the handshake's time box.
   */
  async #connectFresh(deadline: number): Promise<{ link: Link; hs: HandshakeResult }> {
    const backoff = this.#o.reconnectBackoff ?? { initialMs: 100, maxMs: 5000 };
    for (let attempt = 0; ; attempt++) {
      const link = await this.#open(deadline);
      try {
        return { link, hs: await handshakeAsSource(link, this.#o.ticket, null) };
      } catch (e) {
        link.destroy();
        const delay = backoffDelay(attempt, backoff);
        if (!isDestBusy(e) || this.#abortRequested || Date.now() + delay > deadline) throw e;
        this.#log.info({ attempt, delayMs: delay }, 'destination busy with other connections; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  async #open(deadline: number): Promise<Link> {
    const open =
      this.#o.openSocket ??
      ((ep: Endpoint, dl: number) =>
        connectWithRetry(ep, {
          deadline: dl,
          backoff: this.#o.reconnectBackoff ?? { initialMs: 100, maxMs: 5000 },
          ...(this.#o.tls ? { tls: this.#o.tls } : {}),
          onRetry: (attempt, err, delayMs) => this.#log.info({ attempt, delayMs, err: err.message }, 'destination not reachable yet; retrying'),
        }));
    const socket = await open(this.#o.connect, deadline);
    return new Link(socket, { ...this.#o.link, log: this.#log });
  }

  #attach(link: Link): void {
    this.#link = link;
    // D sends its digests again with each COMPLETE: a half-received set from an old link is void.
    this.#digests = newTally();
    this.#blockServer = new BlockServer(link, this.#o.image, this.#cache, this.#log, this.#blockStats, this.#sent, () => this.#imageStable(), this.#readBuffers);
    this.#blockServer.onBulkRequest = (end) => this.#scanPacer.noteStream(end);
    this.#blockServer.knownZero = (offset, length) => this.#scanPacer.isKnownZero(offset, length);
    this.#blockServer.onChunkRead = (offset, zero) => this.#scanPacer.noteServed(offset, zero);
    link.on('close', (err) => {
      this.#credit.wake();
      if (this.#phase !== 'confirmed') this.#log.warn({ err }, 'migration link lost');
    });
    link.setHandler((msg) => this.#onMessage(msg));
  }

  #imageStable(): boolean {
    return this.#phase === 'awaiting-finish' || this.#phase === 'postcopy' || this.#phase === 'confirmed';
  }

  #onMessage(msg: Message): void {
    switch (msg.type) {
      case 'BLOCK_REQ':
        if (this.#phase === 'connecting') throw new ProtocolError('PC_ERR_UNEXPECTED', 'block request before BEGIN');
        this.#blockServer!.handle(msg);
        return;
      case 'CREDIT':
        this.#credit.grant(msg.bytes);
        return;
      case 'PREPARED':
        this.#prepared.resolve(msg.cookie);
        return;
      case 'FINISH_RESULT':
        this.#finish.resolve(msg);
        return;
      case 'ABORT':
        this.#log.warn({ reason: msg.reason }, 'destination aborted the migration');
        this.#prepared.reject(abortError(msg));
        this.#stream?.fail(new ProtocolError('PC_ERR_ROLLBACK', `destination aborted: ${msg.reason}`));
        this.#credit.wake();
        this.#finish.resolve({ running: false, error: msg.reason });
        return;
      case 'BLOCK_DIGESTS':
        if (this.#phase !== 'postcopy') throw new ProtocolError('PC_ERR_UNEXPECTED', `BLOCK_DIGESTS in phase ${this.#phase}`);
        if (this.#digests.received + msg.entries.length > Math.ceil(this.#o.image.size / this.#o.blockSize)) {
          throw new ProtocolError('PC_ERR_MALFORMED', 'more block digests than blocks');
        }
        this.#tallyDigests(msg.entries);
        return;
      case 'COMPLETE': {
        if (this.#phase !== 'postcopy') throw new ProtocolError('PC_ERR_UNEXPECTED', `COMPLETE in phase ${this.#phase}`);
        if (msg.pristineBlocks !== this.#digests.received) {
          throw new ProtocolError('PC_ERR_MALFORMED', `COMPLETE names ${msg.pristineBlocks} digests, ${this.#digests.received} arrived`);
        }
        const digests = this.#digests;
        this.#digests = newTally();
        const link = this.#link!;
        void this.#finalCheck(digests).then(
          (bad) => {
            if (link.closed) return;
            if (bad.length > 0) {
              link.send({ type: 'DIGEST_MISMATCH', blocks: bad.slice(0, MAX_MISMATCH_BLOCKS) });
              return;
            }
            link.send({ type: 'CONFIRM' });
            this.#complete.resolve();
          },
          (e: unknown) => link.close(isPostcopyError(e) ? e : new ProtocolError('PC_ERR_BACKEND', String(e))),
        );
        return;
      }
      case 'GUEST_STREAM':
        if (!this.#stream) throw new ProtocolError('PC_ERR_UNEXPECTED', 'guest stream without a hypervisor migration');
        void this.#stream.deliver(msg.data).catch((e) => this.#log.warn({ err: e }, 'guest stream return path failed'));
        return;
      case 'GUEST_STREAM_END':
        this.#stream?.deliverEnd();
        return;
      case 'ERROR':
        this.#log.error({ code: msg.code, message: msg.message }, 'destination reported an error');
        return;
      default:
        throw new ProtocolError('PC_ERR_UNEXPECTED', `${msg.type} is not for the source`);
    }
  }

  /** Compare each of D's digests with what we sent; keep the blocks we did not send (read at COMPLETE). */
  #tallyDigests(entries: ReadonlyArray<[number, number]>): void {
    const size = this.#o.image.size;
    const tally = this.#digests;
    for (const [block, crc] of entries) {
      if (block * this.#o.blockSize >= size) throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `digest for block ${block}`);
      const ours = this.#sent.get(block);
      if (ours === undefined) tally.unknown.push([block, crc]);
      else if (ours !== crc) tally.bad.push(block);
    }
    tally.received += entries.length;
  }

  /** The final check: the blocks where D differs from our image (none, before we retire). */
  async #finalCheck(tally: DigestTally): Promise<number[]> {
    const bs = this.#o.blockSize;
    const size = this.#o.image.size;
    const bad = [...tally.bad];
    const started = performance.now();
    // Not sent by this process (D's zero map from an NBD backend, or we restarted): read them.
    for (const [block, crc] of tally.unknown) {
      const offset = block * bs;
      if (crc32(await this.#o.image.read(offset, Math.min(bs, size - offset))) !== crc) bad.push(block);
    }
    bad.sort((a, b) => a - b);
    this.#log.info({ blocks: tally.received, reread: tally.unknown.length, mismatched: bad.length, ms: Math.round(performance.now() - started) }, 'final check of the destination image');
    this.#o.events.emit('final-check', { blocks: tally.received, mismatched: bad.length });
    if (bad.length > 0) this.#log.error({ blocks: bad.slice(0, 16), count: bad.length }, 'destination holds blocks that differ from this image; they will be fetched again');
    return bad;
  }

  /**
   * Zero runs of the image as it is after cut-over (it no longer changes), so D never asks for them. A file is
   * scanned once, ahead of D's stream, runs sent as found (on whatever link is current); an NBD backend answers
   * BLOCK_STATUS at once. After a reconnect everything found so far is sent again.
   */
  #sendExtents(link: Link): void {
    const send = (l: Link | null, runs: readonly ZeroRun[]) => {
      for (let i = 0; i < runs.length; i += MAX_EXTENTS_PER_FRAME) {
        if (l && !l.closed) l.send({ type: 'EXTENTS', runs: runs.slice(i, i + MAX_EXTENTS_PER_FRAME) });
      }
    };
    const finish = (l: Link | null) => {
      if (l && !l.closed) l.send({ type: 'EXTENTS_END', count: this.#zeroRuns.length });
    };
    send(link, this.#zeroRuns);
    if (this.#zeroScan === 'done') {
      finish(link);
      return;
    }
    if (this.#zeroScan === 'running') return;
    this.#zeroScan = 'running';
    const image = this.#o.image;
    const collect = (extents: Extent[]) => {
      const runs = extents.filter((e) => e.zero).map((e) => ({ offset: e.offset, length: e.length }));
      this.#zeroRuns.push(...runs);
      // The image no longer changes: these blocks are known as D will hold them, and the final check need not
      // read them again.
      for (const r of runs) this.#sent.recordZero(r.offset, r.length);
      send(this.#link, runs);
    };
    void (async () => {
      if (image.scanZeroRuns) await image.scanZeroRuns(collect, this.#scanPacer);
      else collect(await image.extents());
      this.#zeroScan = 'done';
      finish(this.#link);
      const zeroBytes = this.#zeroRuns.reduce((a, r) => a + r.length, 0);
      this.#o.events.emit('extents', { zeroRuns: this.#zeroRuns.length, zeroBytes });
    })().catch((e) => {
      this.#zeroScan = 'idle';
      this.#log.warn({ err: e }, 'extent map not complete; the destination fetches the rest and zero blocks come back as BLOCK_ZERO');
    });
  }

  async #rollback(e: unknown, precopy: PrecopyResult | null): Promise<SourceResult> {
    const err = isPostcopyError(e) ? e : new ProtocolError('PC_ERR_ROLLBACK', String(e), { cause: e });
    // An operator mistake the destination found (its image is ours) is said in the command's one line, without a stack.
    if (err instanceof UsageError) this.#log.warn({ code: err.code, message: err.message }, 'the destination refused the migration; guest stays on source');
    else this.#log.error({ err }, 'migration failed before cut-over; rolling back, guest stays on source');
    if (this.#link && !this.#link.closed) {
      this.#link.send({ type: 'ABORT', reason: err.message });
      this.#link.close();
    }
    const { guest } = this.#o;
    if (guest && !guest.running) guest.start(this.#o.guestDisk ?? (this.#o.image as unknown as BlockDevice));
    if (this.#o.migrator && this.#phase !== 'connecting') {
      await this.#o.migrator.resume().catch((re) => this.#log.error({ err: re }, 'could not resume the guest on the source'));
    }
    this.#failedInPhase = this.#phase;
    this.#phase = 'rolled-back';
    this.#state?.remove();
    this.#o.events.emit('phase', { phase: 'rolled-back', error: err.message, code: err.code });
    throw new RolledBackError(err, precopy);
  }

  #to(next: SourcePhase): void {
    if (!TRANSITIONS[this.#phase].includes(next)) throw new StateError('PC_ERR_STATE', `source ${this.#phase} -> ${next}`);
    this.#phase = next;
    this.#save();
    this.#o.events.emit('phase', { phase: next });
  }

  #save(): void {
    if (!this.#state || !this.#keys || this.#phase === 'confirmed' || this.#phase === 'rolled-back') return;
    this.#state.save({
      sessionId: this.#keys.sessionId,
      resumeKey: this.#keys.resumeKey.toString('hex'),
      phase: this.#phase,
      size: this.#o.image.size,
      ...(this.#o.imageLabel ?? {}),
    });
  }

  /** A wait before cut-over, cut short by abort(). */
  #orAbort<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.#abort.promise]);
  }
}

/** The migration was rolled back before cut-over; the guest runs on S. */
export class RolledBackError extends PostcopyError {
  readonly precopy: PrecopyResult | null;
  constructor(cause: PostcopyError, precopy: PrecopyResult | null) {
    super('PC_ERR_ROLLBACK', cause.code === 'PC_ERR_ROLLBACK' ? cause.detail : cause.message, { cause });
    this.precopy = precopy;
  }
}

/** D's ABORT as an error: a refusal the operator must act on keeps D's code (a UsageError: exit 2). */
function abortError(msg: { reason: string; code?: string }): PostcopyError {
  const code = msg.code;
  return code !== undefined && Object.hasOwn(ERROR_CODES, code)
    ? new UsageError(code as ErrorCode, msg.reason)
    : new ProtocolError('PC_ERR_ROLLBACK', msg.reason);
}

function closed(link: Link): Promise<'closed'> {
  if (link.closed) return Promise.resolve('closed');
  return new Promise((r) => link.once('close', () => r('closed')));
}

async function raceLink<T>(p: Promise<T>, link: Link, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new TimeoutError('PC_ERR_TIMEOUT', `waiting for ${what}`)), timeoutMs);
  });
  const gone = closed(link).then(() => {
    throw link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED');
  });
  try {
    return await Promise.race([p, timeout, gone]);
  } finally {
    clearTimeout(timer);
  }
}

/** D refused the connection because too many are authenticating (its ERROR frame, or the code itself). */
function isDestBusy(e: unknown): boolean {
  return isPostcopyError(e) && (e.code === 'PC_ERR_BUSY' || (e.code === 'PC_ERR_PEER' && e.detail?.startsWith('PC_ERR_BUSY') === true));
}
