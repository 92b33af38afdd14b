// The destination agent's phase machine: listen, authenticate, Prepare (image + state + pass-through export),
// receive RAM, Finish (resume the guest here), copy-on-read and background stream until Complete, then Confirm.
// After Finish the guest lives here and S holds the only copy of the missing blocks: a lost link is waited out.
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Duplex } from 'node:stream';
import { deferred } from '../common/deferred.js';
import { BackendError, PostcopyError, ProtocolError, StateError, UsageError, isPostcopyError, type ErrorCode } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { ImageWriteIo } from '../common/file-io.js';
import type { Logger } from '../common/logger.js';
import { ensureDir, fsyncDir, statePath } from '../common/state-file.js';
import { hostIdentity, pathIdentity, sameFile } from '../common/image-identity.js';
import type { Endpoint, TlsFiles } from '../link/connect.js';
import { handshakeAsDest, type SessionKeys } from '../link/handshake.js';
import { Link, refuseConnection, type LinkOptions } from '../link/link.js';
import { BULK_CHUNK_BYTES, MAX_DIGESTS_PER_FRAME, MAX_PREAUTH_CONNECTIONS } from '../protocol/constants.js';
import type { Ticket } from '../protocol/handshake.js';
import type { GuestDefinition, Message, MessageOf } from '../protocol/messages.js';
import type { MigratableGuest } from '../guest/types.js';
import type { DestGuestMigrator } from '../guest/migrator.js';
import { LinkStreamChannel, STREAM_CREDIT_WINDOW } from '../link/stream-channel.js';
import { BlockStore, type BlockDigests, type FinalCheckMode, type ImageFile, type StoreFaultReport } from './block-store.js';
import { AwayReporter } from './away-reporter.js';
import { BITMAP_FILE, discardImage, planStart, removeDirIfEmpty, removeSessionFiles, saveSession, type StartPlan } from './dest-session.js';
import { Fetcher, type FallbackSource } from './fetcher.js';
import { PresentBitmap } from './present-bitmap.js';
import { RamReceiver } from './ram-receiver.js';
import { Streamer, type StreamerOptions } from './streamer.js';

export type DestPhase = 'idle' | 'prepared' | 'receiving-ram' | 'postcopy' | 'complete' | 'confirmed' | 'aborted';

const TRANSITIONS: Record<DestPhase, DestPhase[]> = {
  idle: ['prepared', 'aborted'],
  prepared: ['receiving-ram', 'postcopy', 'aborted'],
  'receiving-ram': ['postcopy', 'aborted'],
  postcopy: ['complete'],
  // Back to post-copy only when S's final check found blocks that differ: they are fetched again.
  complete: ['confirmed', 'postcopy'],
  confirmed: [],
  aborted: [],
};

const MIN_BLOCK_SIZE = 4096;
const MAX_IMAGE_BYTES = 2 ** 50;
const SEEN_NONCES_CAP = 10_000;

export type GuestFactory = (def: GuestDefinition, ram: Buffer, deviceState: Record<string, unknown>) => MigratableGuest;

export interface DestAgentOptions {
  listen: Endpoint;
  imagePath: string;
  stateDir: string;
  ticket: Ticket;
  log: Logger;
  events: EventSink;
  /** Makes the guest that resumes here from S's definition, RAM and device state (none: no guest on D). */
  createGuest?: GuestFactory;
  /** Called once the block store exists (at Prepare, or at start after a restart): the NBD export attaches here and returns its URIs. */
  onStoreReady?: (store: BlockStore) => Promise<string[]> | void;
  /** Runs a real hypervisor's guest here (QEMU), fed its own migration stream. */
  migrator?: DestGuestMigrator;
  streamer?: Partial<StreamerOptions>;
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
  /**
   * Complete but the link lost before S's CONFIRM: wait this long for S to reconnect (it is sent COMPLETE
   * again), then finish anyway; every block is durable here, and S exits on COMPLETE.
   */
  confirmGraceMs?: number;
  /** A non-empty file already at imagePath may be overwritten (never the source's own image). */
  force?: boolean;
  /** While S is away after cut-over, say how much exists only on S this often (default 30 s). */
  awayReportMs?: number;
  /** The writes and syncs of the image and the present-bitmap (tests inject a disk that fails or loses unsynced writes). */
  io?: ImageWriteIo;
}

export interface DestResult {
  phase: DestPhase;
  sessionId: string | null;
  /** From the final state's arrival to the guest running here. */
  finishMs: number | null;
  guest: MigratableGuest | null;
  store: BlockStore | null;
  resumes: number;
}

export class DestAgent {
  readonly #o: DestAgentOptions;
  readonly #log: Logger;
  #phase: DestPhase = 'idle';
  #keys: SessionKeys | null = null;
  #server: Server | null = null;
  #link: Link | null = null;
  #store: BlockStore | null = null;
  #streamer: Streamer | null = null;
  readonly #fetcher: Fetcher;
  #ram: RamReceiver | null = null;
  #hypervisor: DestGuestMigrator | null = null;
  #stream: LinkStreamChannel | null = null;
  #receiving: Promise<void> | null = null;
  #streamCredit = 0;
  #guestDef: GuestDefinition | null = null;
  #guest: MigratableGuest | null = null;
  #geometry: { size: number; blockSize: number } | null = null;
  #finishMs: number | null = null;
  #resumes = 0;
  readonly #seenNonces = new Set<string>();
  readonly #done = deferred<DestResult>();
  readonly #sockets = new Set<Socket>();
  /** Connections whose handshake is under way (capped: strangers cost little, see #onConnection). */
  #authenticating = 0;
  readonly #away: AwayReporter;
  /** Whether a file already at the image path may be used at Prepare (decided at start). */
  #existingImage: 'never' | 'empty' | 'overwrite' = 'never';
  /** The image as this session created or took it (what a rollback may undo). */
  #imageFile: ImageFile | null = null;
  #stateDirCreated = false;
  /** The export restarted by a reload (resolved at once when there is none). */
  #exportStarting: Promise<void> = Promise.resolve();

  constructor(opts: DestAgentOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ role: 'dest' });
    this.#fetcher = new Fetcher(this.#log);
    this.#away = new AwayReporter(
      this.#log,
      opts.events,
      () => ({
        bytesOnlyOnSource: this.#store?.bytesOnlyOnSource ?? 0,
        fallback: !opts.fallback ? 'none' : this.#fetcher.fallbackActive ? 'active' : 'armed',
      }),
      opts.awayReportMs,
    );
    this.#fetcher.onSettled = () => this.#streamer?.fill();
    if (opts.fallback) {
      if (opts.fallback.source.size < 1) throw new UsageError('PC_ERR_USAGE', 'fallback source is empty');
      this.#fetcher.setFallback(opts.fallback.source, opts.fallback.afterMs);
      this.#fetcher.onFallback = (active) => {
        this.#o.events.emit('fallback', { active, bytesFromFallback: this.#fetcher.bytesFromFallback });
        this.#streamer?.fill();
      };
    }
  }

  get phase(): DestPhase {
    return this.#phase;
  }
  get store(): BlockStore | null {
    return this.#store;
  }
  get guest(): MigratableGuest | null {
    return this.#guest;
  }
  /** Resolves when S has confirmed; rejects with RolledBackError when the migration was rolled back. */
  get done(): Promise<DestResult> {
    return this.#done.promise;
  }
  get linkUp(): boolean {
    return this.#link !== null && !this.#link.closed;
  }

  /** Reload state from a previous run if there is one, then listen. Returns the bound address. */
  async start(): Promise<Endpoint> {
    const plan = planStart({ imagePath: this.#o.imagePath, stateDir: this.#o.stateDir, force: this.#o.force ?? false });
    if (plan.kind === 'new') {
      this.#existingImage = plan.existing;
      this.#stateDirCreated = ensureDir(this.#o.stateDir);
    }
    this.#reload(plan);
    // A restarted D serves its export again before it listens: an export that cannot start is said now, in one line.
    await this.#exportStarting;
    const tls = this.#o.tls;
    const server = tls
      ? createTlsServer(
          { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
          (sock) => this.#onConnection(sock),
        )
      : createServer((sock) => this.#onConnection(sock));
    if (tls) {
      server.on('tlsClientError', (err, sock) => {
        this.#log.warn({ err: err.message, peer: `${sock.remoteAddress}:${sock.remotePort}` }, 'refused a TLS connection');
        this.#o.events.emit('refused', { peer: `${sock.remoteAddress}:${sock.remotePort}`, code: 'TLS', message: err.message });
      });
    }
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#o.listen.port, this.#o.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((e: unknown) => {
      if (this.#phase === 'idle') removeDirIfEmpty(this.#o.stateDir, this.#stateDirCreated);
      throw e;
    });
    server.on('error', (err) => this.#log.error({ err }, 'listener error'));
    const addr = server.address();
    const ep = typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : this.#o.listen;
    this.#log.info({ ...ep, phase: this.#phase }, 'listening for the source');
    this.#o.events.emit('listening', { ...ep, phase: this.#phase });
    return ep;
  }

  /** Stop listening, drop links, close the image (flushed). */
  async close(): Promise<void> {
    this.#away.back();
    this.#streamer?.stop();
    this.#server?.close();
    for (const s of this.#sockets) s.destroy();
    this.#link?.destroy();
    if (this.#store) await this.#store.close();
    this.#store = null;
    // Stopped before any migration began, or rolled back (nothing to resume): leave nothing of ours behind.
    if (this.#phase === 'idle' && !this.#preparing) removeDirIfEmpty(this.#o.stateDir, this.#stateDirCreated);
    if (this.#phase === 'aborted') {
      await this.#discarded;
      removeSessionFiles(this.#o.stateDir, this.#stateDirCreated);
    }
  }

  /** Progress figures for events and the progress bar. */
  progress(): Record<string, unknown> {
    const s = this.#store;
    return {
      phase: this.#phase,
      link: this.linkUp ? 'up' : this.#fetcher.fallbackActive ? 'fallback' : 'down',
      bytesFromFallback: this.#fetcher.bytesFromFallback,
      blocksPresent: s?.presentBlocks ?? 0,
      blocksTotal: s?.blockCount ?? 0,
      bytesOnlyOnSource: s ? s.bytesOnlyOnSource : this.#geometry?.size ?? 0,
      ...(s ? s.stats : {}),
    };
  }

  // ---- connections ----

  #onConnection(raw: Socket): void {
    this.#sockets.add(raw);
    raw.on('close', () => this.#sockets.delete(raw));
    const peer = `${raw.remoteAddress}:${raw.remotePort}`;
    const log = this.#log.child({ peer });
    if (this.#authenticating >= MAX_PREAUTH_CONNECTIONS) {
      // Strangers cost at most this many small handshakes at once; the real source retries.
      const err = new PostcopyError('PC_ERR_BUSY', `${this.#authenticating} connections are already authenticating; try again`);
      log.warn({ code: err.code }, 'refused a connection: too many authenticating');
      this.#o.events.emit('refused', { peer, code: err.code, message: err.message });
      refuseConnection(raw, err);
      return;
    }
    this.#authenticating++;
    const link = new Link(this.#o.wrapSocket ? this.#o.wrapSocket(raw) : raw, { ...this.#o.link, log, unauthenticated: true });
    link.on('close', (err) => this.#onLinkClosed(link, err));
    if (this.#seenNonces.size > SEEN_NONCES_CAP) this.#seenNonces.clear();
    handshakeAsDest(link, {
      ticket: this.#o.ticket,
      current: this.#keys,
      acceptNew: this.#phase === 'idle' && this.#keys === null,
      phase: this.#phase,
      seenNonces: this.#seenNonces,
      sessionLink: () => (this.#link !== link ? this.#link : null),
    }).then(
      (hs) => {
        if (!hs.resumed && this.#keys !== null) throw new ProtocolError('PC_ERR_UNEXPECTED', 'a migration session is already in progress');
        this.#keys = { sessionId: hs.sessionId, resumeKey: hs.resumeKey };
        if (hs.resumed) this.#resumes++;
        log.info({ sessionId: hs.sessionId, resumed: hs.resumed, phase: this.#phase }, 'source authenticated');
        this.#attach(link, hs.resumed);
      },
    ).catch((e: unknown) => {
      const err = isPostcopyError(e) ? e : new ProtocolError('PC_ERR_MALFORMED', String(e));
      log.warn({ err, code: err.code }, 'refused a connection');
      this.#o.events.emit('refused', { peer, code: err.code, message: err.message });
      link.close(err);
    }).finally(() => this.#authenticating--);
  }

  #attach(link: Link, resumed: boolean): void {
    const old = this.#link;
    this.#link = link;
    if (old && old !== link && !old.closed) old.destroy();
    link.setHandler((msg) => this.#onMessage(msg, link));
    this.#away.back();
    if (this.#store) this.#fetcher.attach(link);
    this.#o.events.emit('link', { state: 'up', resumed, phase: this.#phase });
    if (this.#phase === 'complete') this.#sendComplete();
    if (this.#phase === 'aborted') {
      // S has learned the outcome from WELCOME; nothing more to say.
      link.close();
      this.#finishRollback();
      return;
    }
    this.#streamer?.fill();
  }

  #onLinkClosed(link: Link, err: PostcopyError | undefined): void {
    if (link !== this.#link) return;
    this.#fetcher.detach(link);
    if (this.#phase === 'confirmed' || this.#phase === 'aborted') return;
    this.#log.warn({ err, phase: this.#phase }, 'migration link lost');
    this.#o.events.emit('link', { state: 'down', phase: this.#phase, error: err?.message });
    if (this.#phase === 'idle' || this.#phase === 'prepared' || this.#phase === 'receiving-ram') {
      this.#rollback(err ?? new ProtocolError('PC_ERR_LINK_CLOSED', 'link lost before cut-over'), true);
    } else if (this.#phase === 'complete') {
      this.#awaitConfirmOrGiveUp();
    } else {
      this.#away.away();
    }
    // After cut-over: keep the guest running, its reads of missing blocks wait; S reconnects.
  }

  // ---- messages ----

  #onMessage(msg: Message, link: Link): void {
    switch (msg.type) {
      case 'BEGIN':
        return this.#begin(msg, link);
      case 'RAM_PAGES':
        if (this.#phase !== 'receiving-ram' || !this.#ram) throw new ProtocolError('PC_ERR_UNEXPECTED', `RAM_PAGES in phase ${this.#phase}`);
        this.#ram.apply(msg, link);
        return;
      case 'RAM_ROUND_END':
        this.#o.events.emit('ram-round', { round: msg.round, pages: msg.pagesSent, dirtyRemaining: msg.dirtyRemaining });
        return;
      case 'DEVICE_STATE':
        return this.#finish(msg, link);
      case 'GUEST_STREAM':
        return this.#onGuestStream(msg, link);
      case 'GUEST_STREAM_END':
        this.#stream?.deliverEnd();
        return;
      case 'EXTENTS':
        if (this.#phase !== 'postcopy' && this.#phase !== 'complete') throw new ProtocolError('PC_ERR_UNEXPECTED', `EXTENTS in phase ${this.#phase}`);
        this.#store!.applyZeroRuns(msg.runs);
        return;
      case 'EXTENTS_END':
        this.#log.info({ zeroRuns: msg.count, bytesOnlyOnSource: this.#store?.bytesOnlyOnSource }, 'zero map applied');
        this.#streamer?.fill();
        return;
      case 'BLOCK_DATA':
      case 'BLOCK_ZERO':
      case 'BLOCK_ERR':
        this.#fetcher.onReply(msg);
        return;
      case 'CONFIRM':
        return this.#confirm();
      case 'DIGEST_MISMATCH':
        void this.#onDigestMismatch(msg.blocks).catch((e) => this.#log.error({ err: e }, 'could not re-fetch mismatched blocks'));
        return;
      case 'ABORT':
        if (this.#phase === 'postcopy' || this.#phase === 'complete') {
          throw new ProtocolError('PC_ERR_UNEXPECTED', 'ABORT after cut-over: the guest runs here now');
        }
        this.#rollback(new ProtocolError('PC_ERR_ROLLBACK', `source aborted: ${msg.reason}`), false);
        return;
      case 'ERROR':
        this.#log.error({ code: msg.code, message: msg.message }, 'source reported an error');
        return;
      default:
        throw new ProtocolError('PC_ERR_UNEXPECTED', `${msg.type} is not for the destination`);
    }
  }

  #begin(msg: MessageOf<'BEGIN'>, link: Link): void {
    if (this.#phase !== 'idle' || this.#preparing) throw new ProtocolError('PC_ERR_UNEXPECTED', `BEGIN in phase ${this.#phase}`);
    const { size, blockSize } = msg;
    if (size <= 0 || size > MAX_IMAGE_BYTES) throw new ProtocolError('PC_ERR_MALFORMED', `image size ${size}`);
    if (blockSize < MIN_BLOCK_SIZE || blockSize > BULK_CHUNK_BYTES || (blockSize & (blockSize - 1)) !== 0) {
      throw new ProtocolError('PC_ERR_MALFORMED', `block size ${blockSize} must be a power of two in ${MIN_BLOCK_SIZE}..${BULK_CHUNK_BYTES}`);
    }
    const ours = pathIdentity(this.#o.imagePath);
    if (msg.image && msg.image.host === hostIdentity() && sameFile(ours, msg.image)) {
      // The source's own image under another name (or the same one): refused before anything is written.
      this.#refuse(new UsageError('PC_ERR_SAME_IMAGE', `--image ${this.#o.imagePath} and the source's image are one file on this host (device ${msg.image.dev}, inode ${msg.image.ino}); give the destination another --image`), link);
      return;
    }
    this.#preparing = true;
    void this.#prepare(msg, link);
  }

  /** An operator mistake found in S's request: tell S which (it exits 2 too) and end, having written nothing. */
  #refuse(err: PostcopyError, link: Link): void {
    this.#log.error({ err, code: err.code }, 'refused the migration');
    if (!link.closed) link.send({ type: 'ABORT', reason: err.detail ?? err.message, code: err.code });
    this.#rollback(err, false);
    link.close();
  }
  #preparing = false;

  async #prepare(msg: MessageOf<'BEGIN'>, link: Link): Promise<void> {
    const { size, blockSize } = msg;
    try {
      this.#geometry = { size, blockSize };
      this.#guestDef = msg.guest;
      if (this.#o.fallback && this.#o.fallback.source.size !== size) {
        throw new UsageError('PC_ERR_USAGE', `fallback image is ${this.#o.fallback.source.size} bytes, the source's is ${size}`);
      }
      const isSim = msg.guest !== null && (msg.guest.persistent as { kind?: unknown }).kind === 'sim';
      if (msg.guest && !isSim) {
        if (!this.#o.migrator) throw new ProtocolError('PC_ERR_UNEXPECTED', 'source sent a hypervisor guest but this destination runs none');
        this.#hypervisor = this.#o.migrator;
      } else if (msg.guest) {
        if (!this.#o.createGuest) throw new ProtocolError('PC_ERR_UNEXPECTED', 'source sent a guest but this destination runs none');
        const ramBytes = Number((msg.guest.persistent as { ramBytes?: unknown }).ramBytes);
        if (!Number.isSafeInteger(ramBytes) || ramBytes <= 0 || ramBytes > 64 * 2 ** 30) throw new ProtocolError('PC_ERR_MALFORMED', 'guest ramBytes');
        this.#ram = new RamReceiver(ramBytes);
      }
      const blockCount = Math.ceil(size / blockSize);
      const bitmap = step('creating the present-bitmap', 'PC_ERR_STATE_DIR', () => PresentBitmap.create(this.#bitmapPath(), blockSize, blockCount, this.#o.io));
      const sourceImage = msg.image && msg.image.host === hostIdentity() ? msg.image : null;
      this.#store = step('creating the image', 'PC_ERR_BACKEND', () =>
        BlockStore.create(this.#o.imagePath, { size, bitmap, fetcher: this.#fetcher, log: this.#log, finalCheck: this.#o.finalCheck, io: this.#o.io, existing: this.#existingImage, notSameAs: sourceImage }),
      );
      this.#imageFile = this.#store.file;
      this.#save();
      step('syncing the state dir', 'PC_ERR_STATE_DIR', () => fsyncDir(this.#o.stateDir));
      this.#wireStore();
      this.#to('prepared');
      this.#fetcher.attach(link);
      const store = this.#store;
      const uris = (await step('starting the NBD export', 'PC_ERR_BACKEND', async () => this.#o.onStoreReady?.(store))) ?? [];
      if (this.#hypervisor) {
        await this.#hypervisor.prepare(msg.guest!, uris);
        this.#stream = new LinkStreamChannel(link, null);
        this.#receiving = this.#hypervisor.receive(this.#stream);
        // A failed load ends the migration at once: S must not wait to hand over a guest D cannot run.
        this.#receiving.catch((e: unknown) => {
          if (this.#phase !== 'receiving-ram' && this.#phase !== 'prepared') return;
          this.#finishFailed(e, link, 'ABORT');
        });
      }
      if (link.closed) throw link.closeError ?? new ProtocolError('PC_ERR_LINK_CLOSED', 'link lost during Prepare');
      link.send({ type: 'PREPARED', cookie: msg.cookie });
      if (this.#ram) {
        this.#to('receiving-ram');
        this.#ram.grantInitial(link);
      } else if (this.#hypervisor) {
        this.#to('receiving-ram');
        this.#streamCredit = STREAM_CREDIT_WINDOW;
        link.send({ type: 'CREDIT', bytes: STREAM_CREDIT_WINDOW });
      }
      this.#log.info({ size, blockSize, blockCount, guest: msg.guest ? (this.#hypervisor ? 'hypervisor' : 'sim') : 'none' }, 'prepared');
    } catch (e) {
      const err = isPostcopyError(e) ? e : new ProtocolError('PC_ERR_ROLLBACK', `prepare failed: ${(e as Error).message}`, { cause: e });
      if (err instanceof UsageError) return this.#refuse(err, link);
      if (!link.closed) link.send({ type: 'ABORT', reason: err.message });
      this.#rollback(err, false);
    } finally {
      this.#preparing = false;
    }
  }

  /** A frame of the hypervisor's stream: into the destination hypervisor, then its bytes back as credit. */
  #onGuestStream(msg: MessageOf<'GUEST_STREAM'>, link: Link): void {
    if (!this.#stream || this.#phase !== 'receiving-ram') throw new ProtocolError('PC_ERR_UNEXPECTED', `GUEST_STREAM in phase ${this.#phase}`);
    const n = msg.data.length;
    if (n > this.#streamCredit) throw new ProtocolError('PC_ERR_MALFORMED', 'guest stream beyond granted credit');
    this.#streamCredit -= n;
    this.#stream.deliver(msg.data).then(
      () => {
        if (link.closed) return;
        this.#streamCredit += n;
        link.send({ type: 'CREDIT', bytes: n });
      },
      (e: unknown) => this.#log.error({ err: e }, 'destination hypervisor did not take the stream'),
    );
  }

  #finish(msg: MessageOf<'DEVICE_STATE'>, link: Link): void {
    if (this.#phase !== 'receiving-ram' && this.#phase !== 'prepared') throw new ProtocolError('PC_ERR_UNEXPECTED', `DEVICE_STATE in phase ${this.#phase}`);
    if (this.#hypervisor) {
      void this.#finishHypervisor(link);
      return;
    }
    const started = performance.now();
    try {
      if (this.#ram && this.#guestDef) {
        const ours = this.#ram.digest();
        if (ours !== msg.ramDigest) throw new ProtocolError('PC_ERR_DIGEST', `RAM digest ${ours.slice(0, 16)} != source's ${msg.ramDigest.slice(0, 16)}`);
        this.#guest = this.#o.createGuest!(this.#guestDef, this.#ram.ram, msg.state);
      }
      // Durable before the guest runs: a restart must know the guest may be running here.
      this.#to('postcopy');
    } catch (e) {
      this.#finishFailed(e, link);
      return;
    }
    this.#store!.startCopyOnRead();
    this.#guest?.start(this.#store!);
    this.#ram = null;
    this.#running(link, started);
  }

  /** The hypervisor has the whole stream: once its guest is loaded, persist the phase, start copy-on-read, run it. */
  async #finishHypervisor(link: Link): Promise<void> {
    const started = performance.now();
    try {
      await this.#receiving;
      this.#to('postcopy');
      this.#store!.startCopyOnRead();
      await this.#hypervisor!.start();
    } catch (e) {
      this.#finishFailed(e, link);
      return;
    }
    this.#running(link, started);
  }

  #finishFailed(e: unknown, link: Link, tell: 'FINISH_RESULT' | 'ABORT' = 'FINISH_RESULT'): void {
    const err = isPostcopyError(e) ? e : new ProtocolError('PC_ERR_ROLLBACK', (e as Error).message, { cause: e });
    this.#log.error({ err }, 'finish failed; guest not resumed here');
    if (!link.closed) {
      link.send(tell === 'ABORT' ? { type: 'ABORT', reason: err.message } : { type: 'FINISH_RESULT', running: false, error: err.message });
    }
    this.#rollback(err, false);
  }

  #running(link: Link, started: number): void {
    this.#finishMs = performance.now() - started;
    link.send({ type: 'FINISH_RESULT', running: true });
    this.#log.info({ finishMs: this.#finishMs }, 'guest running on destination; post-copy started');
    this.#o.events.emit('cutover', { finishMs: this.#finishMs });
    this.#streamer!.start();
  }

  #wireStore(): void {
    const store = this.#store!;
    this.#streamer = new Streamer(store, this.#fetcher, {
      windowBytes: this.#o.streamer?.windowBytes ?? 1024 * 1024,
      batchBytes: this.#o.streamer?.batchBytes ?? 256 * 1024,
    });
    store.onDemandMiss = (b) => this.#streamer?.hint(b);
    store.onLocalFault = (f) => this.#onLocalFault(f);
    void store.whenComplete.then(() => this.#onComplete());
  }

  /** D's own disk under the image failed or recovered: said plainly, never blamed on S; the link stays up. */
  #onLocalFault(f: StoreFaultReport): void {
    const image = this.#o.imagePath;
    const what = f.kind === 'disk-full' ? `disk full on ${image}` : `I/O error (${f.code}) on ${image}`;
    if (f.active) this.#log.error({ code: f.code, detail: f.message }, `${what}: ${f.bytesToCome} bytes still to come; fetching paused, retrying`);
    else this.#log.warn({ code: f.code, bytesToCome: f.bytesToCome }, `${image} takes writes again; fetching resumed`);
    this.#o.events.emit(f.kind, { active: f.active, image, code: f.code, bytesToCome: f.bytesToCome, message: f.message });
  }

  #onComplete(): void {
    if (this.#phase !== 'postcopy') return;
    this.#streamer?.stop();
    void this.#finalCheck();
  }

  /** Read back every block that holds S's bytes and give S their digests, then say COMPLETE. */
  async #finalCheck(): Promise<void> {
    const store = this.#store!;
    const started = performance.now();
    this.#digests = await store.pristineDigests();
    if (this.#phase !== 'postcopy') return;
    this.#to('complete');
    this.#log.info({ ...store.stats, checkedBlocks: this.#digests.blocks.length, checkMs: Math.round(performance.now() - started) }, 'every block present and durable');
    this.#sendComplete();
    if (!this.linkUp) this.#awaitConfirmOrGiveUp();
  }
  #digests: BlockDigests | null = null;

  /** S's image differs in these blocks: fetch them again (those the guest has not overwritten since). */
  async #onDigestMismatch(blocks: number[]): Promise<void> {
    if (this.#phase !== 'complete') throw new ProtocolError('PC_ERR_UNEXPECTED', `DIGEST_MISMATCH in phase ${this.#phase}`);
    this.#log.error({ blocks: blocks.slice(0, 16), count: blocks.length }, 'final check: blocks differ from the source; fetching them again');
    this.#o.events.emit('digest-mismatch', { blocks: blocks.length });
    const store = this.#store!;
    this.#digests = null;
    const again = await store.invalidate(blocks);
    this.#to('postcopy');
    void store.whenComplete.then(() => this.#onComplete());
    if (again === 0) {
      this.#onComplete();
      return;
    }
    this.#streamer!.start();
  }

  #awaitConfirmOrGiveUp(): void {
    const timer = setTimeout(() => {
      if (this.#phase !== 'complete' || this.linkUp) return;
      this.#log.warn('complete, but the source did not confirm before the link was lost; finishing anyway');
      this.#o.events.emit('complete', { ...this.progress(), confirmed: false });
      this.#done.resolve(this.#result());
    }, this.#o.confirmGraceMs ?? 60_000);
    timer.unref();
  }

  #sendComplete(): void {
    const link = this.#link;
    if (!link || link.closed || !this.#digests) return;
    const { blocks, crcs } = this.#digests;
    for (let i = 0; i < blocks.length; i += MAX_DIGESTS_PER_FRAME) {
      const n = Math.min(MAX_DIGESTS_PER_FRAME, blocks.length - i);
      link.send({ type: 'BLOCK_DIGESTS', entries: Array.from({ length: n }, (_, k): [number, number] => [blocks[i + k]!, crcs[i + k]!]) });
    }
    link.send({ type: 'COMPLETE', blocks: this.#store!.blockCount, pristineBlocks: blocks.length });
  }

  #confirm(): void {
    if (this.#phase === 'confirmed') return;
    if (this.#phase !== 'complete') throw new ProtocolError('PC_ERR_UNEXPECTED', `CONFIRM in phase ${this.#phase}`);
    this.#to('confirmed');
    this.#away.back();
    this.#o.events.emit('complete', this.progress());
    this.#link?.close();
    this.#done.resolve(this.#result());
  }

  /** Before cut-over only: discard everything this migration created here. */
  #rollback(err: PostcopyError, waitForSource: boolean): void {
    if (this.#phase === 'aborted') return;
    this.#log.warn({ err }, 'rolling back: discarding what this migration created here');
    if (this.#hypervisor) void this.#hypervisor.abort().catch((e) => this.#log.error({ err: e }, 'could not stop the destination hypervisor'));
    this.#fetcher.failAll(err);
    this.#streamer?.stop();
    const store = this.#store;
    this.#store = null;
    this.#discarded = (store?.close() ?? Promise.resolve())
      .catch((e: unknown) => this.#log.warn({ err: e }, 'closing the discarded image failed'))
      .finally(() => {
        discardImage(this.#o.imagePath, this.#imageFile, this.#geometry?.size ?? 0);
        rmSync(this.#bitmapPath(), { force: true });
      });
    this.#phase = 'aborted';
    try {
      this.#save();
    } catch (e) {
      // A state dir that cannot be written (ENOSPC, EIO) must not stop the rollback: a restart finds the last
      // saved phase, which is before cut-over too, and rolls back again.
      this.#log.error({ err: e }, 'could not record the rollback in the state dir; rolling back anyway');
    }
    this.#o.events.emit('phase', { phase: 'aborted', error: err.message, code: err.code });
    this.#rollbackError = err;
    if (!waitForSource || !this.#keys) this.#finishRollback();
    else setTimeout(() => this.#finishRollback(), this.#o.abortGraceMs ?? 30_000).unref();
  }
  #rollbackError: PostcopyError | null = null;
  /** Settles once the image and bitmap of a rolled-back migration are gone. */
  #discarded: Promise<void> = Promise.resolve();

  /** Report the rollback only once it is true: nothing of the migration is left here. */
  #finishRollback(): void {
    if (this.#finishing) return;
    this.#finishing = true;
    void this.#discarded.then(() => {
      for (const e of removeSessionFiles(this.#o.stateDir, this.#stateDirCreated)) this.#log.warn({ err: e }, 'could not remove a state file of the rolled-back session');
      this.#done.reject(new DestRolledBackError(this.#rollbackError ?? new ProtocolError('PC_ERR_ROLLBACK')));
    });
  }
  #finishing = false;

  /** Continue what the state dir holds (checked by planStart): resume after cut-over, or roll back our own files. */
  #reload(plan: StartPlan): void {
    if (plan.kind === 'new') return;
    const saved = plan.saved;
    this.#keys = { sessionId: saved.sessionId, resumeKey: Buffer.from(saved.resumeKey, 'hex') };
    this.#geometry = { size: saved.size, blockSize: saved.blockSize };
    this.#imageFile = saved.image;
    this.#stateDirCreated = saved.stateDirCreated;
    if (plan.kind === 'resume') {
      const blockCount = Math.ceil(saved.size / saved.blockSize);
      const bitmap = PresentBitmap.load(this.#bitmapPath(), saved.blockSize, blockCount, this.#o.io);
      this.#store = BlockStore.reopen(this.#o.imagePath, { size: saved.size, bitmap, fetcher: this.#fetcher, log: this.#log, finalCheck: this.#o.finalCheck, io: this.#o.io, file: saved.image! });
      this.#phase = saved.phase;
      this.#wireStore();
      this.#store.startCopyOnRead();
      this.#exportStarting = Promise.resolve(this.#o.onStoreReady?.(this.#store)).then(() => undefined);
      if (saved.phase === 'postcopy') {
        this.#streamer!.start();
        // S is not here yet: the fallback's wait and the reports start now, as after a lost link.
        this.#fetcher.sourceGone();
        this.#away.away();
      }
      if (saved.phase === 'complete') {
        void this.#store.pristineDigests().then((d) => {
          this.#digests = d;
          this.#sendComplete();
        });
        this.#awaitConfirmOrGiveUp();
      }
      this.#log.warn(
        { phase: saved.phase, present: bitmap.presentCount, total: blockCount },
        'restarted: reloaded image and bitmap; waiting for the source to reconnect',
      );
      this.#o.events.emit('phase', { phase: this.#phase, restarted: true, blocksPresent: bitmap.presentCount });
      return;
    }
    // Crashed before cut-over: the source kept (or resumes) the guest. Undo what this session did, but let S learn it.
    discardImage(this.#o.imagePath, saved.image, saved.size);
    rmSync(this.#bitmapPath(), { force: true });
    this.#phase = 'aborted';
    this.#rollbackError = new ProtocolError('PC_ERR_ROLLBACK', `restarted in phase ${saved.phase} before cut-over`);
    setTimeout(() => this.#finishRollback(), this.#o.abortGraceMs ?? 30_000).unref();
  }

  #result(): DestResult {
    return {
      phase: this.#phase,
      sessionId: this.#keys?.sessionId ?? null,
      finishMs: this.#finishMs,
      guest: this.#guest,
      store: this.#store,
      resumes: this.#resumes,
    };
  }

  #to(next: DestPhase): void {
    if (!TRANSITIONS[this.#phase].includes(next)) throw new StateError('PC_ERR_STATE', `destination ${this.#phase} -> ${next}`);
    this.#phase = next;
    this.#save();
    this.#o.events.emit('phase', { phase: next });
  }

  #save(): void {
    if (!this.#keys || !this.#geometry) return;
    saveSession(this.#o.stateDir, {
      sessionId: this.#keys.sessionId,
      resumeKey: this.#keys.resumeKey.toString('hex'),
      phase: this.#phase,
      size: this.#geometry.size,
      blockSize: this.#geometry.blockSize,
      imagePath: resolve(this.#o.imagePath),
      image: this.#imageFile,
      stateDirCreated: this.#stateDirCreated,
    });
  }

  #bitmapPath(): string {
    return statePath(this.#o.stateDir, BITMAP_FILE);
  }
}

/** Run one step of Prepare; a system error from it says which step failed (a PostcopyError passes as it is). */
function step<T>(what: string, code: ErrorCode, fn: () => T): T {
  const wrap = (e: unknown): never => {
    if (isPostcopyError(e)) throw e;
    throw new BackendError(code, `${what} failed: ${(e as Error).message}`, { cause: e });
  };
  try {
    const r = fn();
    return r instanceof Promise ? (r.catch(wrap) as T) : r;
  } catch (e) {
    return wrap(e);
  }
}

export class DestRolledBackError extends PostcopyError {
  constructor(cause: PostcopyError) {
    super('PC_ERR_ROLLBACK', cause.code === 'PC_ERR_ROLLBACK' ? cause.detail : cause.message, { cause });
  }
}
