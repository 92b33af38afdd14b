// S's agent: the shell around S's session core (source-core.ts). It turns socket, timer and adapter callbacks
// into events, runs `step`, and executes the effects in order; the data plane (block server, read-ahead, zero
// scan, RAM sender) runs beside it. Adapters are injected: the connector, the guest, the image, the state dir.
import { randomBytes } from 'node:crypto';
import type { StageStats } from '../common/stage-histograms.js';
import type { UrgentStage } from './urgent-stages.js';
import type { BlockDevice } from '../common/block-device.js';
import { deferred } from '../common/deferred.js';
import { BackendError, LinkClosedError, ProtocolError, RolledBackError as CommonRolledBackError, toPostcopyError } from '../common/errors.js';
import { sourceImageIdentity } from '../common/image-identity.js';
import type { Logger } from '../common/logger.js';
import { sourceGuest, type SourceGuest } from '../guest/source-guest.js';
import { attemptLink, connectOnce, ConnectAttemptError, type Endpoint } from '../link/connect.js';
import type { Link } from '../link/link.js';
import { CONNECT_ATTEMPT_TIMEOUT_MS, PREPARED_WAIT_MS, RECONNECT_BACKOFF } from './constants.js';
import { SourceDataPlane } from './data-plane.js';
import { finalCheck } from './final-check.js';
import { acceptsAbort, initialState, publicPhase, step, type SourceConfig, type SourceEffect, type SourceEvent, type SourcePhase, type SourceState, type TimerName } from './source-core.js';
import { RolledBackError } from './source-errors.js';
import type { SourceAgentOptions, SourceResult } from './source-agent-options.js';
import { SourceStateDir } from './source-state.js';

export type { SourcePhase };
export type { SourceAgentOptions, SourceResult } from './source-agent-options.js';
export { RolledBackError };

export class SourceAgent {
  readonly #o: SourceAgentOptions;
  readonly #log: Logger;
  readonly #cfg: SourceConfig;
  readonly #now: () => number;
  #state: SourceState = initialState();
  readonly #queue: SourceEvent[] = [];
  #draining = false;
  readonly #outcome = deferred<SourceResult>();
  readonly #timers = new Map<TimerName, NodeJS.Timeout>();
  readonly #guest: SourceGuest;
  readonly #stateDir: SourceStateDir | null;
  #link: Link | null = null;
  readonly #data: SourceDataPlane;
  #maxDowntimeMs: number;

  constructor(opts: SourceAgentOptions) {
    this.#o = opts;
    this.#maxDowntimeMs = opts.maxDowntimeMs;
    this.#log = opts.log.child({ role: 'source' });
    this.#now = opts.now ?? Date.now;
    this.#cfg = {
      size: opts.image.size,
      blockSize: opts.blockSize,
      connectTimeoutMs: opts.connectTimeoutMs,
      resumeTimeoutMs: opts.resumeTimeoutMs ?? Infinity,
      backoff: opts.reconnectBackoff ?? RECONNECT_BACKOFF,
      preparedWaitMs: PREPARED_WAIT_MS,
    };
    this.#stateDir = opts.stateDir ? new SourceStateDir(opts.stateDir, opts.stateDirIsDefault ?? false) : null;
    const disk = opts.guestDisk ?? (opts.image as unknown as BlockDevice);
    this.#guest = opts.sourceGuest ?? sourceGuest({ migrator: opts.migrator, guest: opts.guest, disk, definition: opts.guestDefinition });
    this.#data = new SourceDataPlane(opts.image, opts.blockSize, opts.readAheadBytes, this.#log, opts.bulkRate);
    // Settled before run() is called (a stop request first): run() hands it on; nobody else must see it unhandled.
    this.#outcome.promise.catch(() => {});
  }

  /** Where S's time on D's demand reads went so far. */
  get urgentStages(): Record<UrgentStage, StageStats> {
    return this.#data.urgentStages.summary();
  }
  /** The session D issued (null before the handshake, or after a rollback). */
  get sessionId(): string | null {
    const s = this.#state;
    return 'keys' in s ? s.keys.sessionId : null;
  }
  /** Links lost and regained after cut-over. */
  get reconnects(): number {
    return this.#state.ctx.reconnects;
  }
  /** The guest's pause on the way over, once it is known. */
  get downtimeMs(): number | null {
    const s = this.#state;
    return 'downtimeMs' in s ? s.downtimeMs : null;
  }
  get maxDowntimeMs(): number {
    return this.#maxDowntimeMs;
  }
  /**
   * The RAM cut-over budget, live: the next pre-copy round reads it. False once the guest's final state went out
   * (nothing left to budget) or when a hypervisor runs the pre-copy (QEMU keeps its own limit).
   */
  setMaxDowntime(ms: number): boolean {
    if (this.#o.migrator || this.pastCutover || this.phase === 'confirmed' || this.phase === 'rolled-back') return false;
    this.#maxDowntimeMs = ms;
    return true;
  }
  get phase(): SourcePhase {
    return publicPhase(this.#state);
  }
  /** The phase a rollback happened in ('connecting' means nothing was started on D). */
  get failedInPhase(): SourcePhase | null {
    return this.#state.phase === 'rolled-back' ? this.#state.failedIn : null;
  }
  /** Whether the guest may be running on D now (the final state was sent): S must then not go away. */
  get pastCutover(): boolean {
    const p = this.phase;
    return p === 'awaiting-finish' || p === 'postcopy';
  }
  /**
   * Bytes of the image D may not hold yet, which exist only here: every block this process has neither sent
   * nor found to be zero (an upper bound: D's guest may have overwritten some, and a restarted S starts at all).
   */
  get bytesOnlyHere(): number {
    return this.#o.image.size - this.#data.sent.knownBytes;
  }

  /**
   * Where the migration stands, for progress views and events (names as in D's): the phase, the link, the image's
   * size, what may exist only here (0 once D said COMPLETE), and the data served by class.
   */
  progress(): { phase: SourcePhase; link: 'up' | 'down'; bytesTotal: number; bytesOnlyOnSource: number; bytesServedDemand: number; bytesServedBulk: number } {
    const phase = this.phase;
    return {
      phase,
      link: this.#link && !this.#link.closed ? 'up' : 'down',
      bytesTotal: this.#o.image.size,
      bytesOnlyOnSource: phase === 'confirmed' ? 0 : this.bytesOnlyHere,
      bytesServedDemand: this.#data.served.demand,
      bytesServedBulk: this.#data.served.bulk,
    };
  }

  /**
   * A stop request (Ctrl-C, SIGTERM). Before cut-over: abort, roll back (D is told, the guest goes on here),
   * and run() rejects with RolledBackError; returns true. After it: refused (false), the caller decides.
   */
  abort(reason: string): boolean {
    const accepted = acceptsAbort(this.#state);
    this.#dispatch({ type: 'abort', reason });
    return accepted;
  }

  /** Stop serving after cut-over, keeping the state dir for a restart (the caller exits 5). */
  async close(): Promise<void> {
    this.#dispatch({ type: 'close' });
    this.#link?.close();
    await this.#o.image.close();
  }

  async run(): Promise<SourceResult> {
    const label = this.#o.imageLabel;
    const saved = this.#stateDir?.load({ ...(label ?? {}), size: this.#o.image.size }) ?? null;
    // Restarted after cut-over: the guest is (or may be) on D; only D can tell. Serve until COMPLETE.
    if (saved) {
      this.#o.events.setSession(saved.sessionId);
      this.#dispatch({ type: 'restarted', saved: { sessionId: saved.sessionId, resumeKey: saved.resumeKey, phase: saved.phase as 'awaiting-finish' | 'postcopy' } });
    } else this.#dispatch({ type: 'start' });
    return this.#outcome.promise;
  }

  #dispatch(e: SourceEvent): void {
    this.#queue.push(e);
    if (!this.#draining) void this.#drain();
  }

  /** One event at a time, its effects in order; an effect that must finish first (persist, resume) is awaited. */
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      for (let e = this.#queue.shift(); e; e = this.#queue.shift()) {
        const { state, effects } = step(this.#cfg, this.#state, e, this.#now());
        this.#state = state;
        for (const f of effects) {
          try {
            const pending = this.#execute(f);
            if (pending) await pending;
          } catch (err) {
            this.#log.error({ err, effect: f.type }, 'local failure');
            this.#queue.unshift({ type: 'local-failure', effect: f.type, error: toPostcopyError(err, (d, o) => new BackendError('PC_ERR_BACKEND', d, o)) });
            break;
          }
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  #execute(f: SourceEffect): Promise<void> | void {
    const link = this.#link && !this.#link.closed ? this.#link : null;
    switch (f.type) {
      case 'connect':
        return void this.#connect(f.resume, f.deadline);
      case 'send':
        return void link?.send(f.msg);
      case 'send-begin': {
        // With our image's identity: D refuses to write over it (the same file reached through another path).
        const image = sourceImageIdentity(this.#o.image);
        const cookie = randomBytes(8).toString('hex');
        return void link?.send({ type: 'BEGIN', guest: this.#guest.definition, size: this.#o.image.size, blockSize: this.#o.blockSize, cookie, image });
      }
      case 'send-device-state':
        return void link?.send({ type: 'DEVICE_STATE', state: f.state, ramDigest: f.ramDigest });
      case 'close-link':
        return void this.#link?.close(f.error);
      case 'persist':
        return void this.#stateDir?.save({ ...f.keys, phase: f.phase, size: this.#o.image.size, ...(this.#o.imageLabel ?? {}) });
      case 'remove-state':
        return void this.#stateDir?.remove();
      case 'start-guest':
        return this.#guest.start();
      case 'resume-guest':
        return this.#guest.resume(f.migrationStarted).catch((err) => this.#log.error({ err }, 'could not resume the guest on the source'));
      case 'shutdown-guest':
        return this.#guest.shutdown();
      case 'start-precopy':
        return this.#startPrecopy();
      case 'stop-precopy':
        return this.#data.stopPrecopy(f.error);
      case 'clear-read-cache':
        return this.#data.clearCache();
      case 'make-read-only':
        return this.#o.image.makeReadOnly?.();
      case 'start-extent-scan':
        return void this.#data.scanZeroRuns(() => this.#link).then(
          () => {
            const z = this.#data.zeroRuns;
            this.#o.events.emit('extents', { zeroRuns: z.count, zeroBytes: z.bytes, method: z.method, unreadBytes: z.unreadBytes, ...(z.fallback ? { fallback: z.fallback } : {}) });
            this.#dispatch({ type: 'extents-done' });
          },
          (error: unknown) => this.#dispatch({ type: 'extents-failed', error }),
        );
      case 'send-extents':
        return this.#data.zeroRuns.sendAll(link, f.end);
      case 'final-check':
        return void finalCheck(this.#o.image, this.#o.blockSize, f.tally, this.#log, this.#o.events).then(
          (bad) => this.#dispatch({ type: 'final-check-done', gen: f.gen, bad }),
          (e: unknown) => this.#dispatch({ type: 'final-check-failed', gen: f.gen, error: toPostcopyError(e, (d, o) => new BackendError('PC_ERR_BACKEND', d, o)) }),
        );
      case 'arm-timer':
        clearTimeout(this.#timers.get(f.name));
        return void this.#timers.set(f.name, setTimeout(() => this.#dispatch({ type: 'timer', name: f.name }), f.ms));
      case 'cancel-timer':
        clearTimeout(this.#timers.get(f.name));
        return void this.#timers.delete(f.name);
      case 'emit':
        return this.#o.events.emit(f.name, f.data);
      case 'log':
        return this.#log[f.level]({ ...f.data, ...(f.err !== undefined ? { err: f.err } : {}) }, f.msg);
      case 'warn-link-lost':
        // Said once per loss: this process must stay up, it holds what D still lacks.
        return this.#log.warn(
          { phase: this.phase, bytesOnlySource: this.bytesOnlyHere },
          'link to the destination lost after the final state was sent: the guest runs (or may run) there, and the bytes not yet moved exist only here; reconnecting until it is back',
        );
      case 'report-complete':
        this.#o.events.emit('complete', { ...this.#data.stats });
        return this.#log.info({ ...this.#data.stats }, 'destination complete; confirmed; source released');
      case 'close-image':
        return this.#o.image.close();
      case 'finish':
        return this.#outcome.resolve({ phase: this.phase, sessionId: f.sessionId, precopy: f.precopy, downtimeMs: f.downtimeMs, blocks: this.#data.stats, urgentStages: this.#data.urgentStages.summary(), reconnects: f.reconnects });
      case 'rollback':
        return this.#outcome.reject(new RolledBackError(f.error, f.precopy));
      case 'fail':
        return this.#outcome.reject(f.error);
    }
  }

  /** One attempt at a link (the core arms the backoff between attempts). */
  async #connect(resume: { sessionId: string; resumeKey: string } | null, deadline: number): Promise<void> {
    const openSocket = this.#o.openSocket ?? ((ep: Endpoint) => connectOnce(ep, CONNECT_ATTEMPT_TIMEOUT_MS, this.#o.tls));
    const keys = resume ? { sessionId: resume.sessionId, resumeKey: Buffer.from(resume.resumeKey, 'hex') } : null;
    try {
      const { link, hs } = await attemptLink({ endpoint: this.#o.connect, deadline, openSocket, ticket: this.#o.ticket, resume: keys, link: { ...this.#o.link, log: this.#log } });
      const accept = this.#attach(link);
      // Closed by what D sent behind its WELCOME (a BLOCK_REQ before BEGIN): this attempt failed.
      if (link.closed) throw new ConnectAttemptError('handshake', link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED'));
      this.#o.events.setSession(hs.sessionId);
      this.#dispatch({ type: 'connected', sessionId: hs.sessionId, resumeKey: hs.resumeKey.toString('hex'), destPhase: hs.destPhase, version: hs.version });
      accept();
    } catch (e) {
      const failure = e instanceof ConnectAttemptError ? e : new ConnectAttemptError('handshake', toPostcopyError(e, (d, o) => new ProtocolError('PC_ERR_PEER', d, o)));
      this.#dispatch({ type: 'connect-failed', error: failure.error, stage: failure.stage, jitter: Math.random() });
    }
  }

  /**
   * Serve the data plane on `link` at once; messages for the core that came behind D's WELCOME (its COMPLETE
   * again, after a resume) wait until the core has taken the link: the returned function lets them in.
   */
  #attach(link: Link): () => void {
    this.#link = link;
    // The core numbers links as it accepts them: this one is the next.
    const gen = this.#state.ctx.gen + 1;
    const server = this.#data.serve(link, () => this.#imageStable());
    link.on('close', (err) => {
      this.#data.credit.wake();
      if (this.#state.phase !== 'done') this.#log.warn({ err }, 'migration link lost');
      this.#dispatch({ type: 'link-down', gen, error: err ?? null });
    });
    let early: SourceEvent[] | null = [];
    link.setHandler((msg) => {
      if (this.#data.handle(msg, server, this.#state.phase === 'idle' || this.#state.phase === 'connecting')) return;
      const e: SourceEvent = msg.type === 'BLOCK_DIGESTS' ? { type: 'peer', msg, sent: this.#data.sentDigests(msg.entries) } : { type: 'peer', msg };
      if (early) early.push(e);
      else this.#dispatch(e);
    });
    return () => {
      const held = early ?? [];
      early = null;
      for (const e of held) this.#dispatch(e);
    };
  }

  #startPrecopy(): void {
    const link = this.#link!;
    this.#guest.transfer(this.#data.precopyPort(link, { log: this.#log, events: this.#o.events, maxDowntimeMs: () => this.#maxDowntimeMs })).then(
      (final) => this.#dispatch(link.closed ? { type: 'precopy-failed', error: link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED') } : { type: 'precopy-done', final }),
      (e: unknown) => this.#dispatch({ type: 'precopy-failed', error: toPostcopyError(e, (d, o) => new CommonRolledBackError('PC_ERR_ROLLBACK', d, o)) }),
    );
  }

  #imageStable(): boolean {
    const p = this.phase;
    return p === 'awaiting-finish' || p === 'postcopy' || p === 'confirmed';
  }
}
