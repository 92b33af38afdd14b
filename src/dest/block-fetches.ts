// Fetch orchestration for the block store: one urgent fetch per missing block a guest waits on, shared by every
// waiter (asked again urgently even while the stream is fetching it), bulk fetches for the streamer, and S's
// reply parts checked (whole blocks) and handed to the writer. A failed fetch fails only its own waiters.
import { deferred, type Deferred } from '../common/deferred.js';
import type { PostcopyError } from '../common/errors.js';
import { LatencyRecorder } from '../common/latency-recorder.js';
import type { Logger } from '../common/logger.js';
import { CLASS_URGENT } from '../protocol/constants.js';
import type { BlockClass } from '../protocol/messages.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { Fetcher, FetchSink } from './fetcher.js';
import { DemandStages, type FetchTiming } from './demand-stages.js';
import type { ReadTrace } from '../common/block-device.js';
import type { SourceWriter } from './source-writer.js';
import type { BlockStoreStats } from './store-types.js';

export interface BlockFetchesOptions {
  geometry: BlockGeometry;
  table: BlockTable;
  fetcher: Fetcher;
  writer: SourceWriter;
  stats: BlockStoreStats;
  log: Logger;
  /** The error a demand fetch gets at once while the image's disk fails (nowhere to keep the block), else null. */
  refusal: () => PostcopyError | null;
  /** Told of each demand miss (the streamer continues just past it). */
  demandMiss: (b: number) => void;
}

export class BlockFetches {
  /** Time from a guest's read or write finding a block missing to the block being present. */
  readonly demandLatency = new LatencyRecorder();
  /** The stages of each demand miss (request → answer). */
  readonly stages = new DemandStages();
  /** The urgent fetch under way for a block, so a read joining it shares its stage times. */
  readonly #timings = new Map<number, FetchTiming>();
  readonly #o: BlockFetchesOptions;
  readonly #waiters = new Map<number, Deferred<void>>();

  constructor(opts: BlockFetchesOptions) {
    this.#o = opts;
  }

  /**
   * Resolves once every block the range touches is present (nothing to wait for: undefined). With a trace, a
   * read that waited has its demand-path stages recorded once it is answered.
   */
  ensureRange(offset: number, length: number, trace?: ReadTrace): Promise<void> | void {
    const { geometry, table } = this.#o;
    let waits: Promise<void>[] | null = null;
    const timings: FetchTiming[] = [];
    const last = geometry.lastBlockOf(offset, length);
    for (let b = geometry.blockOf(offset); b <= last; b++) {
      if (table.isPresent(b)) continue;
      (waits ??= []).push(this.ensure(b));
      // The urgent fetch this read waits for (started now, or by an earlier read of the block).
      const t = trace ? this.#timings.get(b) : undefined;
      if (t) timings.push(t);
    }
    if (!waits) return;
    if (trace) this.stages.track(trace, timings);
    return Promise.all(waits).then(() => undefined);
  }

  /** Resolves once block b is present; one fetch per block, shared by every waiter. */
  ensure(b: number): Promise<void> {
    const { table } = this.#o;
    if (table.isPresent(b)) return Promise.resolve();
    // Nowhere to keep it: reads go around the store, a partial write fails like the disk under it.
    const refused = this.#o.refusal();
    if (refused) return Promise.reject(refused);
    let d = this.#waiters.get(b);
    if (!d) {
      d = deferred<void>();
      this.#waiters.set(b, d);
      const started = performance.now();
      void d.promise.then(() => this.demandLatency.record(performance.now() - started), () => {});
    }
    // A bulk fetch of b may sit behind megabytes of stream: ask again, urgently; the later copy is dropped.
    // S's bytes already arrived and are being written: wait for that write, nothing to fetch.
    if (!table.isFetching(b, CLASS_URGENT) && !table.isWriting(b)) {
      this.#o.stats.demandMisses++;
      const timing: FetchTiming = { queuedAt: performance.now() };
      this.#timings.set(b, timing);
      this.fetch(b, 1, CLASS_URGENT, timing);
      this.#o.demandMiss(b);
    }
    return d.promise;
  }

  /** Block b is present: its waiters go on. */
  arrived(b: number): void {
    const d = this.#waiters.get(b);
    if (d) {
      this.#waiters.delete(b);
      d.resolve();
    }
  }

  /** Fail all waiting readers (D gives up on S, or the disk failed). */
  failWaiters(err: PostcopyError): void {
    for (const [, d] of this.#waiters) d.reject(err);
    this.#waiters.clear();
  }

  /** Ask S for `count` blocks from `first`; what arrives is stored by the writer. `timing`: an urgent fetch's stages. */
  fetch(first: number, count: number, cls: BlockClass, timing?: FetchTiming): void {
    const { geometry, table, writer, stats } = this.#o;
    for (let b = first; b < first + count; b++) table.fetchIssued(b, cls);
    const written = () => {
      if (timing) timing.writtenAt = performance.now();
    };
    const sink: FetchSink = {
      onData: (off, data) => {
        geometry.checkReplyPart(off, data.length);
        writer.storeFetched(off, data, cls);
        written();
      },
      onZero: (off, len) => {
        geometry.checkReplyPart(off, len);
        for (let at = off; at < off + len; at += geometry.blockSize) {
          const b = geometry.blockOf(at);
          if (table.isPresent(b)) {
            stats.lateFetchesDropped++;
            continue;
          }
          if (writer.storeZero(b)) stats.zeroBytesSkipped += geometry.blockLength(b);
        }
        written();
      },
      onDone: () => {
        for (let b = first; b < first + count; b++) this.#settled(b, cls, timing);
      },
      onError: (err) => {
        for (let b = first; b < first + count; b++) {
          this.#settled(b, cls, timing);
          if (!table.isPresent(b) && !table.isInflight(b)) {
            this.#waiters.get(b)?.reject(err);
            this.#waiters.delete(b);
          }
        }
        this.#o.log.error({ err, first, count }, 'block fetch failed');
      },
    };
    this.#o.fetcher.request(first * geometry.blockSize, geometry.runLength(first, count), cls, sink, timing);
  }

  #settled(b: number, cls: BlockClass, timing: FetchTiming | undefined): void {
    this.#o.table.fetchSettled(b, cls);
    // The stages stay reachable through the waiters' traces; the map only finds the fetch under way.
    if (timing && this.#timings.get(b) === timing) this.#timings.delete(b);
  }
}
