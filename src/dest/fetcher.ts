// D's side of block fetching: numbered requests to S over whatever link is current, replies matched by id
// and checked against the request, and everything unanswered re-issued on the next link after a reconnect.
import { BackendError, ProtocolError, type PostcopyError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { Link } from '../link/link.js';
import type { FetchTiming } from './demand-stages.js';
import { PathEstimator, type SendStamp } from './path-estimator.js';
import { CLASS_BULK } from '../protocol/constants.js';
import type { BlockClass, Bytes, MessageOf } from '../protocol/messages.js';
import { isAllZero } from '../common/zero.js';
import { backoffDelay, NO_JITTER } from '../common/retry.js';
import { DEFAULT_PATH_LIMITS, type PathLimits } from './path-constants.js';
import { FALLBACK_CHUNK_BYTES, FETCH_RETRY_BACKOFF, LAST_REQUEST_ID, MAX_FETCH_ERROR_RETRIES, SINK_FAILURE_LOG_MS } from './store-constants.js';

export interface FetchSink {
  /** S's bytes: the chunks they arrived in (ByteParts), or one Buffer (the fallback). */
  onData(offset: number, data: Bytes): void;
  onZero(offset: number, length: number): void;
  /** Every byte of the request has arrived. */
  onDone(): void;
  onError(err: PostcopyError): void;
}

interface InFlight {
  id: number;
  offset: number;
  length: number;
  cls: BlockClass;
  sink: FetchSink;
  /** Replies for one request come in order; bytes before this have arrived, so a re-issue asks for the rest. */
  doneUpTo: number;
  errors: number;
  /** Being read from the fallback source: it finishes there, not on S. */
  viaFallback: boolean;
  /** An urgent fetch's stage times (DemandStages). */
  timing: FetchTiming | undefined;
  /** When this request (its latest issue) reached the socket, and the path's state then; null: no sample from it. */
  sentAt: number;
  stamp: (SendStamp & { offsetAtSend: number }) | null;
  /** Reply bytes still owed on the current link (counted out of the path's in-flight as they arrive). */
  owed: number;
}

/** A replica or backup of S's image at cut-over, read when S has been gone too long. */
export interface FallbackSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}


export class Fetcher {
  readonly #log: Logger;
  #link: Link | null = null;
  #nextId = 1;
  readonly #inflight = new Map<number, InFlight>();
  #bulkBytes = 0;
  #urgentRequests = 0;
  /** Reply bytes owed by S for every request on the current link: the path's bytes in flight. */
  #owedBytes = 0;
  readonly #pathLimits: PathLimits;
  readonly #bulkRate: BulkRateLimit | null;
  #path: PathEstimator;
  /** Called whenever a request finishes (the streamer refills its window). */
  onSettled: () => void = () => {};

  #fallback: { source: FallbackSource; afterMs: number } | null = null;
  #fallbackTimer: NodeJS.Timeout | null = null;
  #fallbackActive = false;
  /** Bytes read from the fallback instead of S. */
  bytesFromFallback = 0;
  /** Told when the fallback takes over or hands back (for events). */
  onFallback: (active: boolean) => void = () => {};
  #sinkFailures = 0;
  #sinkFailureLoggedAt = -Infinity;

  /** `firstId`: where request ids start (tests start near the wrap); `path`: the bulk window's bounds; `bulkRate`: the pacing's cap. */
  constructor(log: Logger, opts: { firstId?: number; path?: PathLimits; bulkRate?: BulkRateLimit } = {}) {
    this.#log = log;
    this.#bulkRate = opts.bulkRate ?? null;
    this.#nextId = opts.firstId ?? 1;
    this.#pathLimits = opts.path ?? DEFAULT_PATH_LIMITS;
    this.#path = this.#newPath();
  }

  /** The path to S as measured on the current link (a new link starts a new measurement). */
  get path(): PathEstimator {
    return this.#path;
  }

  #newPath(): PathEstimator {
    return new PathEstimator(this.#pathLimits, () => this.#bulkBytes, performance.now(), this.#bulkRate);
  }

  /** Serve missing blocks from `source` once S has been unreachable for `afterMs`. */
  setFallback(source: FallbackSource, afterMs: number): void {
    this.#fallback = { source, afterMs };
  }

  get fallbackActive(): boolean {
    return this.#fallbackActive;
  }

  get bulkBytesInFlight(): number {
    return this.#bulkBytes;
  }
  get urgentInFlight(): number {
    return this.#urgentRequests;
  }
  get connected(): boolean {
    return this.#link !== null && !this.#link.closed;
  }

  /** Send the requests fn makes together (one write on the link). */
  batch(fn: () => void): void {
    const link = this.#link;
    if (link && !link.closed) link.batch(fn);
    else fn();
  }

  /** Ask for a range; `timing`, when given, gets the request's queued, sent and first-reply times. */
  request(offset: number, length: number, cls: BlockClass, sink: FetchSink, timing?: FetchTiming): void {
    const id = this.#allocId();
    const req: InFlight = { id, offset, length, cls, sink, doneUpTo: offset, errors: 0, viaFallback: false, timing, sentAt: 0, stamp: null, owed: 0 };
    this.#inflight.set(id, req);
    if (cls === CLASS_BULK) this.#bulkBytes += length;
    else this.#urgentRequests++;
    this.#send(req);
  }

  /** Use a new link; everything unanswered is asked for again on it, urgent first. */
  attach(link: Link): void {
    this.#link = link;
    // Another connection may take another route: the path is measured afresh (the agent PINGs it at once).
    this.#path = this.#newPath();
    this.#owedBytes = 0;
    for (const r of this.#inflight.values()) {
      r.owed = 0;
      r.stamp = null;
    }
    this.#stopFallbackTimer();
    if (this.#fallbackActive) {
      this.#fallbackActive = false;
      this.#log.info('source is back; fetching from it again');
      this.onFallback(false);
    }
    const pending = [...this.#inflight.values()].filter((r) => !r.viaFallback).sort((a, b) => a.cls - b.cls);
    if (pending.length > 0) this.#log.info({ requests: pending.length }, 're-issuing requests on the new link');
    for (const req of pending) {
      // Fresh ids: nothing from the old link can be confused with the new replies.
      this.#inflight.delete(req.id);
      req.id = this.#allocId();
      this.#inflight.set(req.id, req);
      this.#send(req);
    }
  }

  /** The link is gone: requests wait for the next one, or for the fallback once S has been gone long enough. */
  detach(link: Link): void {
    if (this.#link !== link) return;
    this.#link = null;
    this.sourceGone();
  }

  /** S is not reachable (the link went, or D restarted without it): arm the fallback's timer. */
  sourceGone(): void {
    if (this.#link === null && this.#fallback && !this.#fallbackTimer && !this.#fallbackActive) {
      this.#fallbackTimer = setTimeout(() => {
        this.#fallbackTimer = null;
        if (this.connected) return;
        this.#fallbackActive = true;
        this.#log.warn({ afterMs: this.#fallback!.afterMs }, 'source gone too long; serving missing blocks from the fallback');
        this.onFallback(true);
        for (const req of [...this.#inflight.values()]) this.#send(req);
      }, this.#fallback.afterMs);
      this.#fallbackTimer.unref();
    }
  }

  /** Connected to S, or serving from the fallback: either way requests make progress. */
  get serving(): boolean {
    return this.connected || this.#fallbackActive;
  }

  #stopFallbackTimer(): void {
    if (this.#fallbackTimer) clearTimeout(this.#fallbackTimer);
    this.#fallbackTimer = null;
  }

  /** Read a request's remaining bytes from the fallback, in block-sized parts, in order. */
  async #readFromFallback(req: InFlight): Promise<void> {
    req.viaFallback = true;
    const source = this.#fallback!.source;
    const end = req.offset + req.length;
    try {
      while (req.doneUpTo < end && this.#inflight.get(req.id) === req) {
        const n = Math.min(FALLBACK_CHUNK_BYTES, end - req.doneUpTo);
        const at = req.doneUpTo;
        const data = await source.read(at, n);
        if (this.#inflight.get(req.id) !== req) return;
        req.doneUpTo += n;
        this.bytesFromFallback += n;
        if (isAllZero(data)) req.sink.onZero(at, n);
        else req.sink.onData(at, data);
      }
      if (this.#inflight.get(req.id) !== req) return;
      this.#settle(req);
      req.sink.onDone();
    } catch (e) {
      if (this.#inflight.get(req.id) !== req) return;
      this.#settle(req);
      req.sink.onError(new BackendError('PC_ERR_BACKEND', `fallback read failed at ${req.doneUpTo}: ${(e as Error).message}`, { cause: e }));
    }
  }

  /**
   * A reply part from S. Anything not matching an outstanding request is a protocol error. `startedAt`: when the
   * reply frame's first byte arrived (default: now, a frame that came whole).
   */
  onReply(msg: MessageOf<'BLOCK_DATA'> | MessageOf<'BLOCK_ZERO'> | MessageOf<'BLOCK_ERR'>, startedAt?: number): void {
    const req = this.#inflight.get(msg.id);
    if (!req) throw new ProtocolError('PC_ERR_UNKNOWN_REQUEST', `${msg.type} id ${msg.id}`);
    if (msg.type === 'BLOCK_ERR') {
      this.#onError(req, msg.errno, msg.message);
      return;
    }
    const now = performance.now();
    if (req.timing && req.timing.replyAt === undefined) req.timing.replyAt = now;
    const length = msg.type === 'BLOCK_DATA' ? msg.data.length : msg.length;
    if (msg.offset !== req.doneUpTo || msg.offset + length > req.offset + req.length) {
      throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `${msg.type} id ${msg.id} at ${msg.offset}+${length} for ${req.doneUpTo}..${req.offset + req.length}`);
    }
    const doneUpTo = req.doneUpTo + length;
    const done = doneUpTo === req.offset + req.length;
    if (msg.done !== done) throw new ProtocolError('PC_ERR_MALFORMED', `${msg.type} id ${msg.id}: done flag disagrees with length`);
    this.#observeReply(req, msg.type === 'BLOCK_DATA' ? length : 0, length, startedAt ?? now, now);
    // The sink may refuse the part (not whole blocks): the request is advanced only once it took it, so a
    // re-issue after the cut-off asks again for exactly what is missing.
    try {
      if (msg.type === 'BLOCK_DATA') req.sink.onData(msg.offset, msg.data);
      else req.sink.onZero(msg.offset, msg.length);
    } catch (e) {
      // Refusing the part's shape is S's error. Anything else failed here (the disk under the image, a bug):
      // never the peer's fault, so the link stays; the part is dropped, its blocks stay missing for a later fetch.
      if (e instanceof ProtocolError) throw e;
      this.#sinkFailed(msg.offset, length, e);
    }
    req.doneUpTo = doneUpTo;
    if (done) {
      this.#settle(req);
      req.sink.onDone();
    }
  }

  /** A reply part, for the path: its round trip (the first part, to its first byte), the bytes that crossed the link, the owed bytes it paid. */
  #observeReply(req: InFlight, wireBytes: number, length: number, startedAt: number, now: number): void {
    const path = this.#path;
    if (req.stamp !== null && req.doneUpTo === req.stamp.offsetAtSend) path.onRtt(startedAt - req.sentAt, now);
    if (wireBytes > 0) path.onDelivered(wireBytes, now);
    else path.onZeroReply(length);
    const paid = Math.min(req.owed, length);
    req.owed -= paid;
    this.#owedBytes -= paid;
  }

  #sinkFailed(offset: number, length: number, err: unknown): void {
    this.#sinkFailures++;
    const now = performance.now();
    if (now - this.#sinkFailureLoggedAt < SINK_FAILURE_LOG_MS) return;
    this.#sinkFailureLoggedAt = now;
    this.#log.error({ err, offset, length, failures: this.#sinkFailures }, 'could not keep a fetched part here; its blocks stay missing');
  }

  /** Fail every outstanding request (D is shutting down or rolling back). */
  failAll(err: PostcopyError): void {
    for (const req of [...this.#inflight.values()]) {
      this.#settle(req);
      req.sink.onError(err);
    }
  }

  #onError(req: InFlight, errno: number, message: string): void {
    req.errors++;
    if (req.errors > MAX_FETCH_ERROR_RETRIES) {
      this.#settle(req);
      req.sink.onError(new BackendError('PC_ERR_BACKEND', `source could not read ${req.offset}+${req.length}: errno ${errno} ${message}`));
      return;
    }
    this.#log.warn({ offset: req.offset, errno, message, attempt: req.errors }, 'source failed a block read; retrying');
    // Keyed by the id that failed: a reconnect meanwhile has re-issued the request under another id already.
    const failedId = req.id;
    const retry = () => {
      if (this.#inflight.get(failedId) !== req) return;
      this.#inflight.delete(req.id);
      req.id = this.#allocId();
      this.#inflight.set(req.id, req);
      this.#send(req);
    };
    setTimeout(retry, backoffDelay(req.errors, FETCH_RETRY_BACKOFF, NO_JITTER)).unref();
  }

  #settle(req: InFlight): void {
    this.#inflight.delete(req.id);
    this.#owedBytes -= req.owed;
    req.owed = 0;
    if (req.stamp !== null && req.doneUpTo === req.offset + req.length) this.#path.onDone(req.stamp, performance.now());
    req.stamp = null;
    if (req.cls === CLASS_BULK) this.#bulkBytes -= req.length;
    else this.#urgentRequests--;
    this.onSettled();
  }

  #send(req: InFlight): void {
    if (this.#fallbackActive && !req.viaFallback) {
      void this.#readFromFallback(req);
      return;
    }
    const link = this.#link;
    if (!link || link.closed) return;
    const now = performance.now();
    const timing = req.timing;
    if (timing) timing.queuedAt = now;
    const length = req.offset + req.length - req.doneUpTo;
    req.stamp = { ...this.#path.onSend(now, this.#owedBytes, length), offsetAtSend: req.doneUpTo };
    req.sentAt = now;
    this.#owedBytes += length - req.owed;
    req.owed = length;
    const sent = () => {
      req.sentAt = performance.now();
      if (timing) timing.socketAt = req.sentAt;
    };
    link.send({ type: 'BLOCK_REQ', id: req.id, offset: req.doneUpTo, length, cls: req.cls }, sent);
  }

  #allocId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= LAST_REQUEST_ID ? 1 : this.#nextId + 1;
    return id;
  }
}

