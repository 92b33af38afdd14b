// The destination agent: a thin shell around D's session core (dest-core.ts). It turns connections, messages,
// timers and adapter results into events, runs the core's step, and hands the effects to the executor
// (dest-effects.ts). After Finish the guest lives here and S holds the only copy of the missing blocks.
import type { Socket } from 'node:net';
import { deferred } from '../common/deferred.js';
import { LinkClosedError, ProtocolError, RolledBackError, UsageError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { ensureDir, statePath } from '../common/state-file.js';
import type { MigratableGuest } from '../guest/types.js';
import type { Endpoint } from '../link/connect.js';
import { handshakeAsDest } from '../link/handshake.js';
import { Link } from '../link/link.js';
import { MigrationListener, type DestListener } from '../link/listener.js';
import type { Message } from '../protocol/messages.js';
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';
import { AwayReporter } from './away-reporter.js';
import type { BlockStore } from './block-store.js';
import { FILE_STORES } from './dest-store.js';
import { DEFAULT_ABORT_GRACE_MS, DEFAULT_CONFIRM_GRACE_MS, SEEN_NONCES_CAP } from './constants.js';
import { initialState, shownPhase, step } from './dest-core.js';
import type { DestEvent, DestOutcome, DestState, ShownPhase } from './dest-core-types.js';
import { SYSTEM_CLOCK, type DestClock } from './dest-clock.js';
import { DestEffects } from './dest-effects.js';
import { errorOf, failureOf } from './dest-failure.js';
import { destGuestFactory } from './dest-guests.js';
import { BITMAP_FILE, planStart, removeDirIfEmpty, removeSessionFiles } from './dest-session.js';
import { ExportOwner, NO_EXPORT } from './export-owner.js';
import { Fetcher } from './fetcher.js';
import { Streamer } from './streamer.js';
import { pathLimitsUpTo } from './path-constants.js';
import type { PathReport } from './path-estimator.js';

export type { DestPhase, ShownPhase } from './dest-core-types.js';
export type { DestAgentOptions, DestResult } from './dest-options.js';
import type { DestAgentOptions, DestResult } from './dest-options.js';
export type { GuestFactory } from './dest-guests.js';
/** The rolled-back error D's `done` rejects with (one class for both sides). */
export { RolledBackError as DestRolledBackError } from '../common/errors.js';

export class DestAgent {
  readonly #o: DestAgentOptions;
  readonly #log: Logger;
  readonly #fetcher: Fetcher;
  readonly #away: AwayReporter;
  readonly #fx: DestEffects;
  readonly #listener: DestListener;
  readonly #clock: DestClock;
  readonly #done = deferred<DestResult>();
  readonly #seenNonces = new Set<string>();
  #state: DestState = initialState(false);
  #link: Link | null = null;
  /** Events waiting for the step in progress to finish its effects (effects may cause events). */
  readonly #queue: DestEvent[] = [];
  #stepping = false;

  constructor(opts: DestAgentOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ role: 'dest' });
    this.#clock = opts.clock ?? SYSTEM_CLOCK;
    this.#fetcher = new Fetcher(this.#log, { path: pathLimitsUpTo(opts.streamer?.windowBytes), ...(opts.bulkRate ? { bulkRate: opts.bulkRate } : {}) });
    this.#away = new AwayReporter(this.#log, opts.events, () => ({ bytesOnlyOnSource: this.store?.bytesOnlyOnSource ?? 0, fallback: !opts.fallback ? 'none' : this.#fetcher.fallbackActive ? 'active' : 'armed' }), opts.awayReportMs);
    this.#fetcher.onSettled = () => this.#fx.streamer?.fill();
    if (opts.fallback) {
      if (opts.fallback.source.size < 1) throw new UsageError('PC_ERR_USAGE', 'fallback source is empty');
      this.#fetcher.setFallback(opts.fallback.source, opts.fallback.afterMs);
      this.#fetcher.onFallback = (active) => {
        opts.events.emit('fallback', { active, bytesFromFallback: this.#fetcher.bytesFromFallback });
        this.#fx.streamer?.fill();
      };
    }
    const onStoreReady = opts.onStoreReady;
    const exporter = opts.export ?? (onStoreReady ? { start: async (s: BlockStore) => (await onStoreReady(s)) ?? [], stop: async () => {} } : NO_EXPORT);
    this.#fx = new DestEffects(
      {
        log: this.#log,
        events: opts.events,
        stateDir: opts.stateDir,
        imagePath: opts.imagePath,
        bitmapPath: this.#bitmapPath(),
        fetcher: this.#fetcher,
        away: this.#away,
        exporter: new ExportOwner(exporter),
        clock: this.#clock,
        timerMs: { 'abort-grace': opts.abortGraceMs ?? DEFAULT_ABORT_GRACE_MS, 'confirm-grace': opts.confirmGraceMs ?? DEFAULT_CONFIRM_GRACE_MS },
        store: { finalCheck: opts.finalCheck, io: opts.io, fallbackSize: opts.fallback?.source.size },
        stores: opts.stores ?? FILE_STORES,
        guests: opts.guests ?? destGuestFactory({ createGuest: opts.createGuest, migrator: opts.migrator, log: this.#log }),
      },
      {
        state: () => this.#state,
        link: () => this.#link,
        dispatch: (e) => this.#dispatch(e),
        finish: (outcome) => this.#finish(outcome),
        progress: () => this.progress(),
        adoptStore: (store) => this.#adoptStore(store),
      },
    );
    const listenerOpts = { listen: opts.listen, log: this.#log, events: opts.events, ...(opts.tls ? { tls: opts.tls } : {}) };
    this.#listener = (opts.listener ?? ((lo, on) => new MigrationListener(lo, on)))(listenerOpts, (s, peer, settled) => this.#onConnection(s, peer, settled));
  }

  get phase(): ShownPhase {
    return shownPhase(this.#state);
  }
  get store(): BlockStore | null {
    return this.#fx.store;
  }
  get guest(): MigratableGuest | null {
    return this.#fx.guest?.migratable ?? null;
  }
  /** Resolves when S has confirmed; rejects with RolledBackError when the migration was rolled back. */
  get done(): Promise<DestResult> {
    return this.#done.promise;
  }
  /** The session issued to S (null until a source's handshake). */
  get sessionId(): string | null {
    return this.#state.ctx.keys?.sessionId ?? null;
  }
  /** Links S resumed after a loss. */
  get resumes(): number {
    return this.#state.ctx.resumes;
  }

  /**
   * An operator's abort (the host service's API). 'idle': no source came yet, nothing to undo (the caller closes
   * the agent). 'rolling-back': the migration was being set up here, the guest still runs on S: it is rolled back
   * as for a local fault (S is told ABORT) and `done` rejects with RolledBackError. 'refused': the guest's final
   * state has come (or the guest runs here): only the migration's end frees this disk from S.
   */
  abort(reason: string): 'idle' | 'rolling-back' | 'refused' {
    const s = this.#state;
    if (s.phase === 'listening' && s.ctx.keys === null) return 'idle';
    if (s.phase !== 'preparing' && s.phase !== 'receiving') return 'refused';
    this.#dispatch({ type: 'local-fault', error: { code: 'PC_ERR_ROLLBACK', message: `aborted on the destination: ${reason}` } });
    return 'rolling-back';
  }

  get linkUp(): boolean {
    return this.#link !== null && !this.#link.closed;
  }

  /** Reload state from a previous run if there is one, then listen. Returns the bound address. */
  async start(): Promise<Endpoint> {
    const o = this.#o;
    const plan = planStart({ imagePath: o.imagePath, stateDir: o.stateDir, force: o.force ?? false });
    if (plan.kind === 'new') {
      this.#fx.existingImage = plan.existing;
      this.#state = initialState(ensureDir(o.stateDir));
    } else {
      const s = plan.saved;
      if (plan.kind === 'resume') {
        const store = (o.stores ?? FILE_STORES).reopen(this.#fx.storeSetup(), { size: s.size, blockSize: s.blockSize, file: s.image! });
        this.#fx.store = store;
        this.#adoptStore(store);
      }
      const keys = { sessionId: s.sessionId, resumeKey: s.resumeKey };
      this.#o.events.setSession(s.sessionId);
      this.#dispatch({ type: 'restarted', restart: { kind: plan.kind, phase: s.phase, keys, geometry: { size: s.size, blockSize: s.blockSize }, image: s.image, stateDirCreated: s.stateDirCreated } });
      // A restarted D serves its export again before it listens: an export that cannot start is said now, in one line.
      await this.#fx.exportRestarted;
    }
    const ep = await this.#listener.listen().catch((e: unknown) => {
      if (this.#state.phase === 'listening') removeDirIfEmpty(o.stateDir, this.#state.ctx.stateDirCreated);
      throw e;
    });
    this.#log.info({ ...ep, phase: this.phase }, 'listening for the source');
    o.events.emit('listening', { ...ep, phase: this.phase });
    return ep;
  }

  /** Stop listening, drop links, stop the export, close the image (flushed). */
  async close(): Promise<void> {
    this.#away.back();
    this.#fx.streamer?.stop();
    this.#listener.close();
    // Before cut-over a dropped link still rolls back (S keeps its guest); after it the state is kept.
    this.#link?.destroy();
    const before = this.#state;
    this.#dispatch({ type: 'stop' });
    this.#fx.cancelTimers();
    await this.#fx.stopExport();
    const store = this.#fx.store;
    this.#fx.store = null;
    if (store) await store.close();
    // Stopped before any migration began, or rolled back (nothing to resume): leave nothing of ours behind.
    if (before.phase === 'listening') removeDirIfEmpty(this.#o.stateDir, before.ctx.stateDirCreated);
    if (before.ctx.saved === 'aborted') {
      await this.#fx.discarded;
      removeSessionFiles(this.#o.stateDir, before.ctx.stateDirCreated);
    }
  }

  /** Progress figures for events and the progress bar. */
  progress(): Record<string, unknown> {
    const s = this.store;
    return {
      phase: this.phase,
      link: this.linkUp ? 'up' : this.#fetcher.fallbackActive ? 'fallback' : 'down',
      bytesFromFallback: this.#fetcher.bytesFromFallback,
      blocksPresent: s?.presentBlocks ?? 0,
      blocksTotal: s?.blockCount ?? 0,
      bytesOnlyOnSource: s ? s.bytesOnlyOnSource : this.#state.ctx.geometry?.size ?? 0,
      ...(s ? s.stats : {}),
      ...(s && s.stats.demandMisses > 0 ? { demandStages: s.demandStages.brief() } : {}),
      ...(this.linkUp ? { path: this.pathReport() } : {}),
    };
  }

  /** The path to S as the current (or last) link measured it: round trips, bottleneck rate, window, pacing. */
  pathReport(): PathReport {
    return this.#fetcher.path.report(performance.now());
  }

  // ---- the one place events enter the core ----

  #dispatch(event: DestEvent): void {
    this.#queue.push(event);
    if (this.#stepping) return;
    this.#stepping = true;
    try {
      for (let e = this.#queue.shift(); e; e = this.#queue.shift()) {
        const r = step(this.#state, e, this.#clock.now());
        this.#state = r.state;
        this.#fx.run(r.effects);
      }
    } finally {
      this.#stepping = false;
    }
  }

  #finish(outcome: DestOutcome): void {
    if (outcome.kind === 'rolled-back') this.#done.reject(RolledBackError.from(errorOf(outcome.error)));
    else if (outcome.kind !== 'stopped') this.#done.resolve(this.#result());
  }

  // ---- connections ----

  #onConnection(raw: Socket, peer: string, settled: () => void): void {
    const log = this.#log.child({ peer });
    const link = new Link(this.#o.wrapSocket ? this.#o.wrapSocket(raw) : raw, { ...this.#o.link, log, unauthenticated: true });
    link.on('close', (err) => {
      this.#fetcher.detach(link);
      if (link === this.#link) this.#dispatch({ type: 'link-down', error: failureOf(err ?? new LinkClosedError('PC_ERR_LINK_CLOSED', 'link lost'), 'PC_ERR_LINK_CLOSED') });
    });
    // PING round trips measure the path too (the stream's own requests do most of it).
    link.on('rtt', (ms) => {
      if (link === this.#link) this.#fetcher.path.onRtt(ms, performance.now());
    });
    if (this.#seenNonces.size > SEEN_NONCES_CAP) this.#seenNonces.clear();
    const keys = this.#state.ctx.keys;
    handshakeAsDest(link, {
      ticket: this.#o.ticket,
      current: keys ? { sessionId: keys.sessionId, resumeKey: Buffer.from(keys.resumeKey, 'hex') } : null,
      acceptNew: this.#state.phase === 'listening' && keys === null,
      phase: this.phase,
      seenNonces: this.#seenNonces,
      sessionLink: () => (this.#link !== link ? this.#link : null),
    })
      .then((hs) => {
        if (!hs.resumed && this.#state.ctx.keys !== null) throw new ProtocolError('PC_ERR_UNEXPECTED', 'a migration session is already in progress');
        log.info({ sessionId: hs.sessionId, resumed: hs.resumed, phase: this.phase }, 'source authenticated');
        this.#o.events.setSession(hs.sessionId);
        const old = this.#link;
        this.#link = link;
        if (old && old !== link && !old.closed) old.destroy();
        link.setHandler((msg) => this.#onMessage(msg, link));
        this.#dispatch({ type: 'link-up', keys: { sessionId: hs.sessionId, resumeKey: hs.resumeKey.toString('hex') }, resumed: hs.resumed });
      })
      .catch((e: unknown) => {
        const f = failureOf(e, 'PC_ERR_MALFORMED');
        log.warn({ err: f.cause, code: f.code }, 'refused a connection');
        this.#o.events.emit('refused', { peer, code: f.code, message: f.message });
        link.close(errorOf(f));
      })
      .finally(settled);
  }

  #onMessage(msg: Message, link: Link): void {
    if (link !== this.#link) return;
    if (msg.type === 'BLOCK_DATA' || msg.type === 'BLOCK_ZERO' || msg.type === 'BLOCK_ERR') {
      // The data plane: each block reply goes straight to the fetcher, never through the core.
      try {
        this.#fetcher.onReply(msg, link.frameStartedAt);
      } catch (e) {
        this.#dispatch({ type: 'peer-violation', error: failureOf(e, 'PC_ERR_MALFORMED') });
      }
      return;
    }
    this.#dispatch({ type: 'peer', msg });
  }

  #adoptStore(store: BlockStore): void {
    const { windowBytes: _max, ...streamer } = this.#o.streamer ?? {};
    this.#fx.streamer = new Streamer(store, this.#fetcher, { ...streamer, batchBytes: streamer.batchBytes ?? BULK_CHUNK_BYTES, ...(this.#o.bulkRate ? { bulkRate: this.#o.bulkRate } : {}) });
    store.onDemandMiss = (b) => this.#fx.streamer?.hint(b);
    store.demandLatency.onRecord = this.#o.onDemandLatency ?? null;
    store.onLocalFault = (f) => {
      // D's own disk under the image failed or recovered: said plainly, never blamed on S; the link stays up.
      const image = this.#o.imagePath;
      const what = f.kind === 'disk-full' ? `disk full on ${image}` : `I/O error (${f.code}) on ${image}`;
      if (f.active) this.#log.error({ code: f.code, detail: f.message }, `${what}: ${f.bytesToCome} bytes still to come; fetching paused, retrying`);
      else this.#log.warn({ code: f.code, bytesToCome: f.bytesToCome }, `${image} takes writes again; fetching resumed`);
      this.#o.events.emit(f.kind, { active: f.active, image, code: f.code, bytesToCome: f.bytesToCome, message: f.message });
    };
  }

  #result(): DestResult {
    const ctx = this.#state.ctx;
    return { phase: this.phase, sessionId: ctx.keys?.sessionId ?? null, finishMs: ctx.finishMs, guest: this.guest, store: this.store, resumes: ctx.resumes };
  }

  #bitmapPath(): string {
    return statePath(this.#o.stateDir, BITMAP_FILE);
  }
}
