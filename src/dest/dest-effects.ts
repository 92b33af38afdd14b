// D's effect executor: runs what the session core asks for, in order, against the adapters (store, streamer,
// fetcher, export, guest, timers, state dir). Nothing here decides; every promise it starts reports back as
// an event, and a failing effect stops its batch and becomes a `local-fault` event.
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { BackendError, PostcopyError, errorFor, toPostcopyError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { fsyncDir } from '../common/state-file.js';
import type { Link } from '../link/link.js';
import { LinkStreamChannel } from '../link/stream-channel.js';
import type { BlockStore } from './block-store.js';
import type { Created, DestEffect, DestEvent, DestOutcome, DestState, TimerName } from './dest-core-types.js';
import { discardImage, forgetSession, removeSessionFiles, saveSession } from './dest-session.js';
import type { DestStoreFactory, StoreSetup } from './dest-store.js';
import type { ExportOwner } from './export-owner.js';
import type { Fetcher } from './fetcher.js';
import type { AwayReporter } from './away-reporter.js';
import type { Streamer } from './streamer.js';
import type { DestGuest, DestGuestFactory } from '../guest/dest-guest.js';
import type { DestClock } from './dest-clock.js';
import { errorOf, failureOf } from './dest-failure.js';

/** What the executor needs of the agent around it. */
export interface EffectHost {
  state(): DestState;
  link(): Link | null;
  dispatch(event: DestEvent): void;
  finish(outcome: DestOutcome): void;
  progress(): Record<string, unknown>;
  /** The store exists: wire it to the streamer and the agent's events. */
  adoptStore(store: BlockStore): void;
}

export interface EffectDeps {
  log: Logger;
  events: EventSink;
  stateDir: string;
  imagePath: string;
  bitmapPath: string;
  fetcher: Fetcher;
  away: AwayReporter;
  exporter: ExportOwner;
  clock: DestClock;
  timerMs: Record<TimerName, number>;
  store: Omit<StoreSetup, 'imagePath' | 'bitmapPath' | 'fetcher' | 'log' | 'existing'>;
  stores: DestStoreFactory;
  guests: DestGuestFactory;
}

export class DestEffects {
  readonly #d: EffectDeps;
  readonly #host: EffectHost;
  readonly #timers = new Map<TimerName, unknown>();
  store: BlockStore | null = null;
  streamer: Streamer | null = null;
  guest: DestGuest | null = null;
  /** Whether a file already at the image path may be used at Prepare (decided at start). */
  existingImage: 'never' | 'empty' | 'overwrite' = 'never';
  /** Settles once a rollback's files are gone (close() waits for it). */
  discarded: Promise<void> = Promise.resolve();
  /** The export started again by a restart (start() waits for it). */
  exportRestarted: Promise<void> = Promise.resolve();
  #uris: string[] = [];

  constructor(deps: EffectDeps, host: EffectHost) {
    this.#d = deps;
    this.#host = host;
  }

  /** Run a batch in order; the first that fails stops it and is reported as a local fault. */
  run(effects: readonly DestEffect[]): void {
    for (const [i, effect] of effects.entries()) {
      try {
        this.#run(effect);
      } catch (e) {
        this.#d.log.error({ err: e, effect: effect.type }, 'a local step failed');
        this.#host.dispatch({ type: 'local-fault', error: failureOf(e, 'PC_ERR_STATE_DIR'), skipped: effects.slice(i + 1).map((f) => f.type) });
        return;
      }
    }
  }

  /** Where and how the store lives. */
  storeSetup(): StoreSetup {
    const d = this.#d;
    return { ...d.store, imagePath: d.imagePath, bitmapPath: d.bitmapPath, fetcher: d.fetcher, log: d.log, existing: this.existingImage };
  }

  stopExport(): Promise<void> {
    return this.#d.exporter.stop();
  }

  cancelTimers(): void {
    for (const h of this.#timers.values()) this.#d.clock.clearTimer(h);
    this.#timers.clear();
  }

  #run(e: DestEffect): void {
    const d = this.#d;
    const store = this.store;
    switch (e.type) {
      case 'send':
        return this.#send(e.msg);
      case 'persist':
        return this.#persist(e.phase, e.syncDir === true, e.bestEffort === true, e.forgetOnFailure === true);
      case 'prepare-store':
        return this.#prepareStore(e);
      case 'start-export':
        return this.#startExport(e.restart);
      case 'stop-export':
        return this.#task(d.exporter.stop(), () => null, 'stopping the NBD export');
      case 'prepare-guest': {
        const link = this.#host.link();
        const peer = { send: (m: Parameters<Link['send']>[0]) => this.#send(m), get closed() { return !link || link.closed; }, openStream: () => new LinkStreamChannel(link!, null) };
        return this.#result(this.guest!.prepare(this.#uris, peer), 'guest-prepared', 'PC_ERR_HYPERVISOR');
      }
      case 'open-guest':
        return this.#task(this.guest!.open(), (err) => ({ type: 'guest-load-failed', error: failureOf(err) }));
      case 'guest-frame':
        try {
          this.guest!.take(e.msg);
        } catch (err) {
          this.#host.dispatch({ type: 'peer-violation', error: failureOf(err, 'PC_ERR_MALFORMED') });
        }
        return;
      case 'load-guest':
        return this.#result(this.guest!.load(e.final), 'guest-loaded', 'PC_ERR_ROLLBACK');
      case 'start-guest':
        // No guest here: answered at once, so going live waits for postcopy's persist as a guest's start does.
        return this.#result(this.guest ? this.guest.start(store!) : Promise.resolve(), 'guest-started', 'PC_ERR_ROLLBACK');
      case 'abort-guest':
        return this.#task(this.guest?.abort() ?? Promise.resolve(), () => null, 'could not stop the destination guest');
      case 'start-copy-on-read':
        return store?.startCopyOnRead();
      case 'apply-zero-runs':
        try {
          store!.applyZeroRuns(e.msg.runs);
        } catch (err) {
          this.#host.dispatch({ type: 'peer-violation', error: failureOf(err, 'PC_ERR_MALFORMED') });
        }
        return;
      case 'start-stream':
        return this.streamer?.start();
      case 'stop-stream':
        return this.streamer?.stop();
      case 'fill-stream':
        return this.streamer?.fill();
      case 'attach-fetches': {
        const link = this.#host.link();
        if (store && link && !link.closed) {
          d.fetcher.attach(link);
          // The new link's path is measured from its first round trip on.
          link.ping();
        }
        return;
      }
      case 'source-gone':
        return d.fetcher.sourceGone();
      case 'fail-fetches':
        return d.fetcher.failAll(errorOf(e.error));
      case 'watch-complete':
        return this.#task(store!.whenComplete, () => null, 'waiting for the store', { type: 'store-complete' });
      case 'compute-digests':
        return this.#task(
          store!.pristineDigests().then((digests) => this.#host.dispatch({ type: 'digests-ready', digests })),
          (err) => ({ type: 'local-fault', error: failureOf(err, 'PC_ERR_BACKEND'), from: 'invalidate' }),
        );
      case 'invalidate':
        return this.#task(
          store!.invalidate(e.blocks).then((again) => this.#host.dispatch({ type: 'invalidated', again })),
          (err) => ({ type: 'local-fault', error: failureOf(err, 'PC_ERR_BACKEND') }),
        );
      case 'away-start':
        return d.away.away();
      case 'away-stop':
        return d.away.back();
      case 'arm-timer': {
        if (this.#timers.has(e.name)) d.clock.clearTimer(this.#timers.get(e.name));
        const h = d.clock.setTimer(d.timerMs[e.name], () => {
          this.#timers.delete(e.name);
          this.#host.dispatch({ type: 'timer', name: e.name });
        });
        this.#timers.set(e.name, h);
        return;
      }
      case 'cancel-timer':
        if (this.#timers.has(e.name)) d.clock.clearTimer(this.#timers.get(e.name));
        this.#timers.delete(e.name);
        return;
      case 'discard-created':
        return this.#discard(e.created);
      case 'remove-session-files':
        for (const err of removeSessionFiles(d.stateDir, this.#host.state().ctx.stateDirCreated)) d.log.warn({ err }, 'could not remove a state file of the rolled-back session');
        return;
      case 'close-link':
        return this.#host.link()?.close(e.error ? errorOf(e.error) : undefined);
      case 'emit':
        return d.events.emit(e.event, e.progress ? { ...this.#host.progress(), ...e.fields } : e.fields);
      case 'log':
        return d.log[e.level](e.fields ?? {}, e.msg);
      case 'finish':
        return this.#host.finish(e.outcome);
    }
  }

  #send(msg: Parameters<Link['send']>[0]): void {
    const link = this.#host.link();
    if (link && !link.closed) link.send(msg);
  }

  #persist(phase: DestState['ctx']['saved'], syncDir: boolean, bestEffort: boolean, forgetOnFailure: boolean): void {
    const { keys, geometry, created, stateDirCreated } = this.#host.state().ctx;
    if (!keys || !geometry) return;
    try {
      saveSession(this.#d.stateDir, { sessionId: keys.sessionId, resumeKey: keys.resumeKey, phase, size: geometry.size, blockSize: geometry.blockSize, imagePath: resolve(this.#d.imagePath), image: created.image, stateDirCreated });
      if (syncDir) fsyncDir(this.#d.stateDir);
    } catch (err) {
      if (!bestEffort) throw errorFor('PC_ERR_STATE_DIR', `recording phase ${phase} in ${this.#d.stateDir} failed: ${(err as Error).message}`, { cause: err });
      if (forgetOnFailure) {
        // The record before must not be resumed: without it a restart starts afresh and refuses S's resume.
        const left = forgetSession(this.#d.stateDir);
        this.#d.log.error({ err, phase, recordRemoved: left === null, removeError: left?.message }, `could not record phase ${phase} in the state dir; removed the session record instead`);
        return;
      }
      this.#d.log.error({ err, phase }, `could not record phase ${phase} in the state dir; going on (a restart finds the phase before)`);
    }
  }

  #prepareStore(e: Extract<DestEffect, { type: 'prepare-store' }>): void {
    const d = this.#d;
    const r = d.stores.prepare(this.storeSetup(), e.begin, () => {
      if (e.begin.guest) this.guest = d.guests(e.begin.guest, e.size);
    });
    if (r.ok) {
      this.store = r.store;
      this.#host.adoptStore(r.store);
      this.#host.dispatch({ type: 'store-prepared', result: { ok: true }, created: r.created });
    } else {
      this.#host.dispatch({ type: 'store-prepared', result: { ok: false, error: failureOf(r.error, 'PC_ERR_ROLLBACK', true) }, created: r.created });
    }
  }

  #startExport(restart: boolean): void {
    const started = this.#d.exporter.start(this.store!).then((uris) => {
      this.#uris = uris;
    });
    const labelled = started.catch((err: unknown) => {
      throw toPostcopyError(err, (detail, o) => new BackendError('PC_ERR_BACKEND', `starting the NBD export failed: ${detail}`, o));
    });
    if (!restart) return this.#result(labelled, 'export-started', 'PC_ERR_BACKEND');
    // A restarted D serves its export again before it listens: one that cannot start is said now, in one line.
    this.exportRestarted = started.catch((err: unknown) => {
      throw toPostcopyError(err, (detail, o) => new BackendError('PC_ERR_BACKEND', `restarted in phase ${this.#host.state().ctx.saved}, but the NBD export could not start again: ${detail}`, o));
    });
  }

  #discard(created: Created): void {
    const d = this.#d;
    const store = this.store;
    this.store = null;
    this.streamer?.stop();
    const size = this.#host.state().ctx.geometry?.size ?? 0;
    this.discarded = (store?.close() ?? Promise.resolve())
      .catch((err: unknown) => d.log.warn({ err }, 'closing the discarded image failed'))
      .then(() => {
        discardImage(d.imagePath, created.image, size);
        if (created.bitmap) rmSync(d.bitmapPath, { force: true });
      })
      .catch((err: unknown) => d.log.error({ err }, 'could not delete what the rolled-back session created'))
      .then(() => this.#host.dispatch({ type: 'discarded' }));
  }

  /** An adapter call whose outcome is an AdapterResult event. */
  #result(p: Promise<unknown>, type: 'export-started' | 'guest-prepared' | 'guest-loaded' | 'guest-started', code: PostcopyError['code']): void {
    p.then(
      () => this.#host.dispatch({ type, result: { ok: true } }),
      (err: unknown) => this.#host.dispatch({ type, result: { ok: false, error: failureOf(err, code) } }),
    );
  }

  /** Any other promise: its success may be an event, its failure an event or a log line. */
  #task(p: Promise<unknown>, onError: (err: unknown) => DestEvent | null, what = '', onOk: DestEvent | null = null): void {
    p.then(
      () => onOk && this.#host.dispatch(onOk),
      (err: unknown) => {
        const ev = onError(err);
        if (ev) this.#host.dispatch(ev);
        else this.#d.log.error({ err }, what);
      },
    );
  }
}
