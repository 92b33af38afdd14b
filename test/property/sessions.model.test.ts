// Model-based test of both session cores together (src/source/source-core.ts and src/dest/dest-core.ts): one world
// holds S's and D's core states, a modeled link between them (a queue each way, a generation, the handshake with
// D's persisted phase in WELCOME), what each side last persisted, the adapters' pending requests and both guests.
// fast-check commands deliver a message or cut the link (what is in flight is lost); fire timers; answer requests ok
// or failed in any order; fail a state-dir write; crash and restart either side from its last persist; stop either
// side; complete D's store; make D's digests differ (S's final check then finds a mismatch).
// After every command DESIGN.md §1's invariants that need both sides are checked; at the end a heal phase (the
// network back, every request answered ok, timers fired when nothing else moves) must bring both sides to one
// agreed outcome. Pure: no sockets, files or timers; the data plane (blocks) is left out.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuthError, BackendError, BusyError, LinkClosedError, ProtocolError } from '../../src/common/errors.js';
import type { ImageFile } from '../../src/dest/block-store.js';
import { initialState as destInitial, shownPhase, step as destStep } from '../../src/dest/dest-core.js';
import type { Created, DestEffect, DestEvent, DestPhase, DestState, Failure, TimerName as DestTimer } from '../../src/dest/dest-core-types.js';
import type { Message } from '../../src/protocol/messages.js';
import { initialState as sourceInitial, step as sourceStep, type SourceConfig, type SourceEffect, type SourceEvent, type SourceState } from '../../src/source/source-core.js';
import { DEST_PHASE_EDGES } from '../helpers/dest-phase-order.js';
import { fcParams, fcRuns } from '../helpers/fc.js';

const CI = process.env.CI === 'true';
/** Sequences per run: 20 000 in CI (≥ 10 000 asked; about 1.5 s here), a second or two locally; FC_RUNS scales, FC_SEED replays. */
const SEQUENCES = CI ? 20_000 : 5_000;
const HEAL_STEPS = 400;
/** SESSIONS_STRICT=1: no stranding is exempted from the heal check (see KNOWN_GAPS). */
const STRICT = process.env.SESSIONS_STRICT === '1';

const BLOCK = 65536;
const CFG: SourceConfig = { size: 16 * BLOCK, blockSize: BLOCK, connectTimeoutMs: 5000, resumeTimeoutMs: Infinity, backoff: { initialMs: 100, maxMs: 2000 }, preparedWaitMs: 60_000 };
const IMAGE: ImageFile = { created: true, identity: { dev: '1', ino: '2' }, priorSize: 0 };
const SIM = { persistent: { kind: 'sim' }, transient: {} };
const PRECOPY = { rounds: 1, pagesSent: 1, bytesSent: 4096, finalPages: 0, bandwidthBytesPerSec: 0, converged: true, pausedAtEpochMs: 0 };
const BOOM: Failure = { code: 'PC_ERR_BACKEND', message: 'injected failure' };

/** D's core phases in which a local fault goes down persistFailedAfterCutover. */
const AFTER_CUTOVER: readonly string[] = ['postcopy', 'final-check', 'invalidating', 'awaiting-confirm'];
const S_RANK: Record<string, number> = { begin: 1, perform: 2, 'awaiting-finish': 3, postcopy: 4 };

type SPending = 'connect' | 'precopy' | 'final-check' | 'extents';
type DPending = 'prepare-store' | 'start-export' | 'prepare-guest' | 'open-guest' | 'load-guest' | 'start-guest' | 'watch-complete' | 'compute-digests' | 'invalidate' | 'discard-created';
const D_PENDING: readonly DPending[] = ['prepare-store', 'start-export', 'prepare-guest', 'open-guest', 'load-guest', 'start-guest', 'watch-complete', 'compute-digests', 'invalidate', 'discard-created'];
const S_PENDING: readonly SPending[] = ['connect', 'precopy', 'final-check', 'extents'];

/** A message on the wire, with what the world knew when it was sent. */
interface Wire {
  msg: Message;
  /** COMPLETE: D's persisted phase was complete when it was sent. */
  durable?: boolean;
}

/** One connection: a queue each way; an end closed by its side still delivers what it sent before closing. */
interface Link {
  id: number;
  toD: Wire[];
  toS: Wire[];
  /** Each side still holds its end (has not closed it nor been told it went down). */
  sOpen: boolean;
  dOpen: boolean;
  /** S's generation for this link (its ctx.gen after `connected`). */
  sGen: number;
}

interface DRecord {
  phase: DestPhase;
  created: Created;
  geometry: { size: number; blockSize: number } | null;
  keys: { sessionId: string; resumeKey: string } | null;
  stateDirCreated: boolean;
}

class Violation extends Error {}

/** Requests outstanding, counted: delete answers one of them. */
class Bag<T> {
  #n = new Map<T, number>();
  add(x: T): void {
    this.#n.set(x, (this.#n.get(x) ?? 0) + 1);
  }
  delete(x: T): void {
    const n = this.#n.get(x) ?? 0;
    if (n <= 1) this.#n.delete(x);
    else this.#n.set(x, n - 1);
  }
  has(x: T): boolean {
    return this.#n.has(x);
  }
  clear(): void {
    this.#n.clear();
  }
  get size(): number {
    return this.#n.size;
  }
}

class Joint {
  now = 1_000_000;
  s: SourceState = sourceInitial();
  d: DestState = destInitial(true);
  link: Link | null = null;
  links = 0;
  sessions = 0;
  /** Each process: running, or exited (its outcome, or a crash not yet restarted), or refused to start again. */
  sAlive = true;
  dAlive = true;
  dGone = false;
  sPersisted: { sessionId: string; resumeKey: string; phase: string } | null = null;
  dPersisted: DRecord | null = null;
  sPending = new Map<SPending, number>();
  /** A multiset: the same request may be outstanding more than once (two discards, say). */
  dPending = new Bag<DPending>();
  sTimers = new Set<'prepared' | 'reconnect'>();
  dTimers = new Set<DestTimer>();
  /** The guests: S's runs from its start, is paused by the precopy adapter at its end, resumed or shut down by S. */
  sGuest: 'off' | 'running' | 'paused' = 'off';
  /** D's: 'starting' once start-guest is asked for (it may run from then on), 'running' once it said so. */
  dGuest: 'none' | 'starting' | 'running' | 'aborted' = 'none';
  /** D said FINISH_RESULT running in this session. */
  dToldRunning = false;
  /** D's image differs from S's in some blocks (S's final check finds them until D invalidates them). */
  diverged = false;
  /** What D created in this session (the store adapter's answer): a discard may name only that. */
  dCreated: Created = { image: null, bitmap: false };
  /** S received a COMPLETE sent after D made complete durable, on its current link. */
  sGotDurableComplete = false;
  dGotConfirm = false;
  dMismatchPending = false;
  sOutcome: 'done' | 'rolled-back' | 'failed' | null = null;
  dOutcome: 'confirmed' | 'unconfirmed' | 'rolled-back' | 'stopped' | null = null;
  /** Each side's state dir fails its next write. */
  sFailNextPersist = false;
  dFailNextPersist = false;
  /** The causes of a stranded S seen so far in this run, each recorded when it happened (see KNOWN_GAPS). */
  causes = new Set<Gap>();
  log: string[] = [];

  #sQueue: SourceEvent[] = [];
  #dQueue: DestEvent[] = [];
  #busy = false;

  constructor(readonly withGuest: boolean) {}

  fail(why: string): never {
    throw new Violation(`${why}\n  world: S ${this.s.phase} (guest ${this.sGuest}, persisted ${this.sPersisted?.phase ?? '-'}), D ${this.d.phase} (guest ${this.dGuest}, persisted ${this.dPersisted?.phase ?? '-'}), link ${this.link ? `#${this.link.id} S:${this.link.sOpen ? 'open' : 'closed'} D:${this.link.dOpen ? 'open' : 'closed'}` : 'none'}\n  trace:\n    ${trace(this.log).join('\n    ')}`);
  }

  // ---- driving the cores: events caused by effects wait until the batch that caused them has run ----

  toS(e: SourceEvent): void {
    this.#sQueue.push(e);
    this.#drain();
  }
  toD(e: DestEvent): void {
    this.#dQueue.push(e);
    this.#drain();
  }

  #drain(): void {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        const se = this.#sQueue.shift();
        if (se) {
          this.#stepS(se);
          continue;
        }
        const de = this.#dQueue.shift();
        if (de) {
          this.#stepD(de);
          continue;
        }
        break;
      }
    } finally {
      this.#busy = false;
    }
  }

  #stepS(e: SourceEvent): void {
    if (!this.sAlive) return;
    this.now += 5;
    const before = this.s.phase;
    let r: ReturnType<typeof sourceStep>;
    try {
      r = sourceStep(CFG, this.s, e, this.now);
    } catch (err) {
      this.fail(`S's step threw on ${e.type} in ${before}: ${(err as Error).message}`);
    }
    this.s = r.state;
    this.log.push(`S ${before} --${describeS(e)}--> ${r.state.phase} [${r.effects.filter((f) => f.type !== 'log' && f.type !== 'emit').map(describeSEffect).join(', ')}]`);
    for (const f of r.effects) {
      if (f.type === 'persist' && this.sFailNextPersist) {
        // The state dir fails this write: the shell stops the batch there and tells the core.
        this.sFailNextPersist = false;
        this.log.push('  (S: that persist failed; the rest of the batch did not run)');
        this.#sQueue.push({ type: 'local-failure', effect: 'persist', error: new BackendError('PC_ERR_BACKEND', 'ENOSPC') });
        break;
      }
      this.#applyS(f);
    }
    if (this.sOutcome !== null && this.s.phase !== 'failed') this.#sExit();
  }

  #stepD(e: DestEvent): void {
    if (!this.dAlive) return;
    this.now += 5;
    const before = this.d.phase;
    let r: ReturnType<typeof destStep>;
    try {
      r = destStep(this.d, e, this.now);
    } catch (err) {
      this.fail(`D's step threw on ${e.type} in ${before}: ${(err as Error).message}`);
    }
    this.d = r.state;
    seen.dPhases.add(r.state.phase);
    this.log.push(`D ${before} --${describeD(e)}--> ${r.state.phase} [${r.effects.filter((f) => f.type !== 'log' && f.type !== 'emit').map(describeDEffect).join(', ')}]`);
    const told = r.effects.some((f) => f.type === 'send' && (f.msg.type === 'ABORT' || (f.msg.type === 'FINISH_RESULT' && !f.msg.running)));
    if (told && r.state.phase !== before && before !== 'preparing' && !r.effects.some((f) => f.type === 'arm-timer' && f.name === 'abort-grace')) {
      // D rolls back once S may have sent its final state, and would finish without waiting for S to learn it (the
      // answer may be lost with the link).
      this.fail('D told S of its rollback and does not wait for S to learn it (no abort-grace)');
    }
    for (const f of r.effects) {
      if (f.type === 'persist' && this.dFailNextPersist) {
        // The state dir fails this write: a best-effort record leaves the one before and the batch goes on;
        // any other stops the batch there and comes back as a local fault.
        this.dFailNextPersist = false;
        this.log.push(`  (D: persist ${f.phase} failed${f.bestEffort ? ', best effort' : '; the rest of the batch did not run'}${f.forgetOnFailure ? '; record removed instead' : ''})`);
        if (f.forgetOnFailure) {
          this.dPersisted = null;
          this.causes.add('forgotten-record');
        }
        if (f.bestEffort) continue;
        this.#dQueue.push({ type: 'local-fault', error: { code: 'PC_ERR_STATE_DIR', message: 'state dir unwritable' }, skipped: r.effects.slice(r.effects.indexOf(f) + 1).map((e) => e.type) });
        break;
      }
      this.#applyD(f);
    }
  }

  #applyS(f: SourceEffect): void {
    const link = this.link;
    const sCanSend = link !== null && link.sOpen && link.sGen === this.s.ctx.gen;
    switch (f.type) {
      case 'connect':
        this.sPending.set('connect', this.s.ctx.gen);
        return;
      case 'send':
        if (sCanSend) link.toD.push({ msg: f.msg });
        return;
      case 'send-begin':
        if (sCanSend) link.toD.push({ msg: { type: 'BEGIN', guest: this.withGuest ? SIM : null, size: CFG.size, blockSize: CFG.blockSize, cookie: 'c' } });
        return;
      case 'send-device-state':
        if (this.sPersisted?.phase !== 'awaiting-finish') this.fail('S sent the final state before awaiting-finish was persisted');
        if (this.sGuest === 'running') this.fail('S sent the final state with its guest running');
        if (sCanSend) link.toD.push({ msg: { type: 'DEVICE_STATE', state: {}, ramDigest: '00' } });
        return;
      case 'send-extents':
        if (sCanSend) {
          link.toD.push({ msg: { type: 'EXTENTS', runs: [] } });
          if (f.end) link.toD.push({ msg: { type: 'EXTENTS_END', count: 0 } });
        }
        return;
      case 'close-link':
        if (link && link.sOpen) {
          link.sOpen = false;
          this.#sQueue.push({ type: 'link-down', gen: link.sGen, error: null });
        }
        return;
      case 'persist': {
        const last = this.sPersisted && this.sPersisted.sessionId === f.keys.sessionId ? S_RANK[this.sPersisted.phase]! : 0;
        if (S_RANK[f.phase]! < last) this.fail(`S's persisted phase went back: ${this.sPersisted!.phase} -> ${f.phase}`);
        this.sPersisted = { ...f.keys, phase: f.phase };
        return;
      }
      case 'remove-state':
        this.sPersisted = null;
        return;
      case 'start-guest':
      case 'resume-guest':
        if (this.dToldRunning) this.fail(`S ran its guest (${f.type}) after D said "running"`);
        if (this.dRunsGuest()) this.fail(`S ran its guest (${f.type}) while D's guest is ${this.dGuest}`);
        this.sGuest = 'running';
        return;
      case 'shutdown-guest':
        this.sGuest = 'off';
        return;
      case 'start-precopy':
        this.sPending.set('precopy', this.s.ctx.gen);
        return;
      case 'stop-precopy':
        this.sPending.delete('precopy');
        return;
      case 'start-extent-scan':
        this.sPending.set('extents', 0);
        return;
      case 'final-check':
        this.sPending.set('final-check', f.gen);
        return;
      case 'arm-timer':
        this.sTimers.add(f.name);
        return;
      case 'cancel-timer':
        this.sTimers.delete(f.name);
        return;
      case 'finish':
        if (!this.sGotDurableComplete) this.fail('S finished without a COMPLETE that D sent after making the image durable');
        if (this.dPersisted?.phase !== 'complete' && this.dPersisted?.phase !== 'confirmed' && !(this.dOutcome === 'confirmed' || this.dOutcome === 'unconfirmed')) {
          this.fail(`S finished while D's persisted phase is ${this.dPersisted?.phase ?? 'none'}`);
        }
        if (!this.dRunsGuest()) this.fail('S finished (shut its guest down) but D does not run the guest');
        this.#sOutcome('done');
        return;
      case 'rollback':
        if (this.dToldRunning || this.dRunsGuest()) this.fail('S rolled back while D runs the guest');
        this.#sOutcome('rolled-back');
        return;
      case 'fail':
        this.#sOutcome('failed');
        return;
      default:
    }
  }

  #sOutcome(o: 'done' | 'rolled-back' | 'failed'): void {
    if (this.sOutcome !== null) this.fail(`S reported a second outcome (${o} after ${this.sOutcome})`);
    this.sOutcome = o;
  }

  /** S's process ends with its outcome: its end of the link goes, nothing of it answers any more. */
  #sExit(): void {
    this.sAlive = false;
    this.sPending.clear();
    this.sTimers.clear();
    if (this.link?.sOpen) this.link.sOpen = false;
  }

  #applyD(f: DestEffect): void {
    const link = this.link;
    const dCanSend = link !== null && link.dOpen;
    switch (f.type) {
      case 'send': {
        const m = f.msg;
        if (m.type === 'FINISH_RESULT' && m.running) {
          if (this.dPersisted?.phase !== 'postcopy') this.fail('D said "running" before postcopy was durable');
          this.dToldRunning = true;
        }
        if ((m.type === 'FINISH_RESULT' && !m.running) || m.type === 'ABORT') {
          if (this.dToldRunning || this.dGuest === 'running') this.fail(`D told S "not running" (${m.type}) after its guest ran`);
        }
        if (m.type === 'COMPLETE' && this.dPersisted?.phase !== 'complete') this.fail(`D sent COMPLETE with persisted phase ${this.dPersisted?.phase ?? 'none'}`);
        if (dCanSend) link.toS.push({ msg: m, durable: m.type === 'COMPLETE' ? this.dPersisted?.phase === 'complete' : undefined });
        return;
      }
      case 'persist': {
        const from = this.dPersisted?.phase;
        if (from !== undefined && from !== f.phase) {
          if (!DEST_PHASE_EDGES[from].includes(f.phase)) this.fail(`D's persisted phase moved ${from} -> ${f.phase}`);
          if (from === 'complete' && f.phase === 'postcopy' && !this.dMismatchPending) this.fail('D went from complete back to postcopy without a digest mismatch');
          if (f.phase === 'aborted' && (this.dToldRunning || this.dGuest === 'running')) this.fail('D persisted aborted after its guest ran');
        }
        if (f.phase === 'postcopy') this.dMismatchPending = false;
        const ctx = this.d.ctx;
        this.dPersisted = { phase: f.phase, created: ctx.created, geometry: ctx.geometry, keys: ctx.keys, stateDirCreated: ctx.stateDirCreated };
        return;
      }
      case 'start-guest':
        if (this.dPersisted?.phase !== 'postcopy') this.fail(`D started its guest with persisted phase ${this.dPersisted?.phase ?? 'none'}`);
        if (this.sGuest === 'running') this.fail('D started its guest while S runs it');
        this.dGuest = 'starting';
        this.dPending.add('start-guest');
        return;
      case 'abort-guest':
        if (this.dGuest === 'running' || this.dToldRunning) this.fail('D aborted a guest that ran here');
        if (this.dGuest === 'starting') this.dGuest = 'aborted';
        return;
      case 'discard-created':
        if (this.dGuest === 'running' || this.dToldRunning) this.fail('D deleted files after its guest started');
        if (f.created.image && f.created.image !== this.dCreated.image) this.fail('D discards an image this session did not create');
        if (f.created.bitmap && !this.dCreated.bitmap) this.fail('D discards a bitmap this session did not create');
        if (this.s.phase === 'postcopy' || this.sPersisted?.phase === 'postcopy') {
          // S has let go (read-only, serving, will shut down after COMPLETE): D deleting now loses the guest.
          this.fail('D deletes what it created while S believes D runs the guest');
        }
        this.dPending.add('discard-created');
        return;
      case 'remove-session-files':
        if (this.dGuest === 'running' || this.dToldRunning) this.fail('D removed its session files after its guest started');
        this.dPersisted = null;
        return;
      case 'close-link':
        if (link && link.dOpen) {
          link.dOpen = false;
          this.#dQueue.push({ type: 'link-down', error: { code: 'PC_ERR_LINK_CLOSED', message: 'closed by D' } });
        }
        return;
      case 'arm-timer':
        this.dTimers.add(f.name);
        return;
      case 'cancel-timer':
        this.dTimers.delete(f.name);
        return;
      case 'finish':
        if (this.dOutcome !== null) this.fail(`D reported a second outcome (${f.outcome.kind} after ${this.dOutcome})`);
        if (f.outcome.kind === 'confirmed' && !this.dGotConfirm) this.fail('D finished confirmed without CONFIRM');
        if (f.outcome.kind === 'unconfirmed' && this.dPersisted?.phase !== 'complete') this.fail('D finished unconfirmed before complete was durable');
        if (f.outcome.kind === 'rolled-back' && (this.dToldRunning || this.dGuest === 'running')) this.fail('D rolled back after its guest ran');
        this.dOutcome = f.outcome.kind;
        // D's process ends: nothing listens any more.
        this.#dExit();
        return;
      default:
        if ((D_PENDING as readonly string[]).includes(f.type)) this.dPending.add(f.type as DPending);
    }
  }

  #dExit(): void {
    this.dAlive = false;
    this.dPending.clear();
    this.dTimers.clear();
    if (this.link?.dOpen) this.link.dOpen = false;
  }

  /** D would run the guest: it started it (or asked to) and did not roll back, or told S so. */
  dRunsGuest(): boolean {
    return this.dGuest === 'starting' || this.dGuest === 'running' || this.dToldRunning;
  }

  // ---- the world's commands ----

  start(): void {
    this.toS({ type: 'start' });
  }

  /** Deliver the next message one way; an end closed with nothing left in flight reaches the other side as link-down. */
  deliver(dir: 'toD' | 'toS'): void {
    const link = this.link;
    if (!link) return;
    const q = link[dir];
    const w = q.shift();
    if (dir === 'toD') {
      if (!link.dOpen) return;
      if (!w) {
        if (!link.sOpen) this.#dDown(link);
        return;
      }
      if (w.msg.type === 'CONFIRM' && this.d.phase === 'awaiting-confirm') this.dGotConfirm = true;
      if (w.msg.type === 'DIGEST_MISMATCH' && this.d.phase === 'awaiting-confirm') this.dMismatchPending = true;
      this.toD({ type: 'peer', msg: w.msg });
    } else {
      if (!link.sOpen || link.sGen !== this.s.ctx.gen) return;
      if (!w) {
        if (!link.dOpen) this.#sDown(link);
        return;
      }
      const sent = w.msg.type === 'BLOCK_DIGESTS' ? w.msg.entries.map(([, crc]) => crc) : undefined;
      if (w.msg.type === 'COMPLETE' && this.s.phase === 'postcopy' && this.s.link === 'up' && !this.s.checking) {
        this.sGotDurableComplete = w.durable === true;
      }
      this.toS({ type: 'peer', msg: w.msg, ...(sent ? { sent } : {}) });
    }
  }

  canDeliver(dir: 'toD' | 'toS'): boolean {
    const link = this.link;
    if (!link) return false;
    if (dir === 'toD') return link.dOpen && (link.toD.length > 0 || !link.sOpen);
    return link.sOpen && link.sGen === this.s.ctx.gen && (link.toS.length > 0 || !link.dOpen);
  }

  #dDown(link: Link): void {
    link.dOpen = false;
    this.toD({ type: 'link-down', error: { code: 'PC_ERR_LINK_CLOSED', message: 'peer closed' } });
  }
  #sDown(link: Link): void {
    link.sOpen = false;
    this.toS({ type: 'link-down', gen: link.sGen, error: null });
  }

  /** The network cuts the link: both ends learn it, nothing in flight arrives. */
  cut(): void {
    const link = this.link;
    if (!link) return;
    link.toD.length = 0;
    link.toS.length = 0;
    if (link.dOpen) this.#dDown(link);
    if (link.sOpen) this.#sDown(link);
  }

  get linkAlive(): boolean {
    return this.link !== null && (this.link.sOpen || this.link.dOpen);
  }

  /** S's connect attempt: the socket and D's handshake decide; both sides learn of a new link. */
  answerConnect(ok: boolean): void {
    this.sPending.delete('connect');
    const s = this.s;
    const resume = s.phase === 'awaiting-finish' || s.phase === 'postcopy' ? s.keys : null;
    const failed = (error: Error, stage: 'socket' | 'handshake') => this.toS({ type: 'connect-failed', error: error as never, stage, jitter: 0.5 });
    if (!ok || !this.dAlive) return failed(new LinkClosedError('PC_ERR_LINK_CLOSED', 'connect: ECONNREFUSED'), 'socket');
    const keys = this.d.ctx.keys;
    if (resume) {
      if (!keys || keys.sessionId !== resume.sessionId) return failed(new AuthError('PC_ERR_AUTH', 'unknown session'), 'handshake');
      if (this.link?.dOpen) return failed(new BusyError('PC_ERR_BUSY', "the session's link is alive"), 'handshake');
    } else if (!(this.d.phase === 'listening' && keys === null)) {
      return failed(new ProtocolError('PC_ERR_UNEXPECTED', 'a migration session is already in progress'), 'handshake');
    }
    // A link of the past is gone for both by now.
    if (this.link) {
      this.link.sOpen = false;
      this.link.dOpen = false;
    }
    const sessionKeys = resume ?? { sessionId: `s${++this.sessions}`, resumeKey: 'ab'.repeat(32) };
    const destPhase = shownPhase(this.d);
    // D says postcopy (S reads it as "running") while its guest has not started yet and may still fail to.
    if (resume && this.d.phase === 'finishing' && destPhase === 'postcopy') this.fail("D's WELCOME says postcopy before its guest has started");
    const link: Link = { id: ++this.links, toD: [], toS: [], sOpen: true, dOpen: true, sGen: this.s.ctx.gen + 1 };
    this.link = link;
    this.sGotDurableComplete = false;
    // D completes its side of the handshake first (its link-up may already send), then S hears WELCOME.
    this.toD({ type: 'link-up', keys: sessionKeys, resumed: resume !== null });
    this.toS({ type: 'connected', ...sessionKeys, destPhase, version: 1 });
  }

  answerS(p: SPending, ok: boolean): void {
    const gen = this.sPending.get(p)!;
    this.sPending.delete(p);
    switch (p) {
      case 'connect':
        return this.answerConnect(ok);
      case 'precopy':
        if (!ok) return this.toS({ type: 'precopy-failed', error: new LinkClosedError('PC_ERR_LINK_CLOSED') });
        // The precopy adapter pauses the guest, then hands over its final state.
        this.sGuest = 'paused';
        return this.toS({ type: 'precopy-done', final: { precopy: PRECOPY, state: {}, ramDigest: '00' } });
      case 'final-check':
        if (!ok) return this.toS({ type: 'final-check-failed', gen, error: new BackendError('PC_ERR_BACKEND', 'read failed') });
        return this.toS({ type: 'final-check-done', gen, bad: this.diverged ? [1] : [] });
      case 'extents':
        return this.toS(ok ? { type: 'extents-done' } : { type: 'extents-failed', error: new Error('scan failed') });
    }
  }

  answerD(p: DPending, ok: boolean): void {
    this.dPending.delete(p);
    const result = ok ? ({ ok: true } as const) : ({ ok: false, error: BOOM } as const);
    switch (p) {
      case 'prepare-store':
        this.dCreated = ok ? { image: IMAGE, bitmap: true } : { image: null, bitmap: true };
        return this.toD({ type: 'store-prepared', result, created: this.dCreated });
      case 'start-export':
        return this.toD({ type: 'export-started', result });
      case 'prepare-guest':
        return this.toD({ type: 'guest-prepared', result });
      case 'open-guest':
        return ok ? undefined : this.toD({ type: 'guest-load-failed', error: BOOM });
      case 'load-guest':
        this.dPending.delete('open-guest');
        return this.toD({ type: 'guest-loaded', result });
      case 'start-guest':
        if (ok && this.dGuest === 'starting') this.dGuest = 'running';
        if (!ok && this.dGuest === 'starting') this.dGuest = 'aborted';
        return this.toD({ type: 'guest-started', result });
      case 'watch-complete':
        return this.toD({ type: 'store-complete' });
      case 'compute-digests':
        if (!ok) return this.toD({ type: 'local-fault', error: BOOM });
        return this.toD({ type: 'digests-ready', digests: { blocks: [1, 2], crcs: [3, 4] } });
      case 'invalidate':
        // ok: the differing blocks are missing again (fetched anew, so the images agree); not ok: nothing invalidated.
        if (ok) this.diverged = false;
        return this.toD({ type: 'invalidated', again: ok ? 2 : 0 });
      case 'discard-created':
        return this.toD({ type: 'discarded' });
    }
  }

  fireS(name: 'prepared' | 'reconnect'): void {
    this.sTimers.delete(name);
    this.now += 1000;
    this.toS({ type: 'timer', name });
  }
  fireD(name: DestTimer): void {
    this.dTimers.delete(name);
    // A grace ran out: S did not come back (or not in time) to learn the outcome.
    this.causes.add('grace');
    this.toD({ type: 'timer', name });
  }

  /** S's process dies: what it did not persist is gone; its guest (the hypervisor's) stays as it was. */
  crashS(): void {
    this.log.push('--- S crashes ---');
    if (this.link?.sOpen) {
      this.link.sOpen = false;
      this.link.toD.length = 0;
    }
    this.sAlive = false;
    this.sPending.clear();
    this.sTimers.clear();
    this.restartS();
  }

  /** S starts again: it resumes a session persisted past the final state; anything earlier is a new migration. */
  restartS(): void {
    this.log.push('--- S restarts ---');
    this.s = sourceInitial();
    this.sAlive = true;
    this.sOutcome = null;
    const p = this.sPersisted;
    if (p && (p.phase === 'awaiting-finish' || p.phase === 'postcopy')) {
      this.toS({ type: 'restarted', saved: { sessionId: p.sessionId, resumeKey: p.resumeKey, phase: p.phase } });
    } else {
      this.sPersisted = null;
      this.toS({ type: 'start' });
    }
  }

  /** D's process dies: the link with it, its timers and requests; the guest (the hypervisor's) stays as it was. */
  crashD(): void {
    this.log.push('--- D crashes ---');
    const link = this.link;
    if (link?.dOpen) {
      link.dOpen = false;
      link.toS.length = 0;
    }
    this.#dExit();
    this.restartD();
  }

  /** D starts again from its record, as planStart decides (a finished or rolled-back record is refused). */
  restartD(): void {
    this.dOutcome = null;
    const rec = this.dPersisted;
    if (rec && (rec.phase === 'confirmed' || rec.phase === 'aborted')) {
      this.log.push(`--- D refuses to start: its record says ${rec.phase} ---`);
      this.dGone = true;
      if (rec.phase === 'aborted') this.causes.add('aborted-record');
      return;
    }
    this.log.push(`--- D restarts from ${rec?.phase ?? 'nothing'} ---`);
    this.d = destInitial(true);
    this.dAlive = true;
    if (!rec || !rec.keys || !rec.geometry) {
      // Nothing on record: a fresh D; what a crash before the first persist left is not this session's to know.
      this.dPersisted = null;
      this.dCreated = { image: null, bitmap: false };
      if (this.dGuest === 'starting') this.dGuest = 'aborted';
      return;
    }
    const kind = rec.phase === 'postcopy' || rec.phase === 'complete' ? 'resume' : 'rollback';
    this.toD({ type: 'restarted', restart: { kind, phase: rec.phase, keys: rec.keys, geometry: rec.geometry, image: rec.created.image, stateDirCreated: rec.stateDirCreated } });
  }

  /** The operator stops D (SIGTERM): its link goes first (as close() does), then the core is told; the process exits. */
  stopD(): void {
    this.causes.add('stop');
    const link = this.link;
    if (link?.dOpen) {
      link.dOpen = false;
      link.toS.length = 0;
      this.toD({ type: 'link-down', error: { code: 'PC_ERR_LINK_CLOSED', message: 'stopping' } });
    }
    if (!this.dAlive) return;
    this.toD({ type: 'stop' });
    if (this.dAlive) {
      this.dOutcome = this.dOutcome ?? 'stopped';
      this.#dExit();
    }
  }

  // ---- invariants after every command ----

  check(): void {
    const sRuns = this.sGuest === 'running';
    if (sRuns && this.dRunsGuest()) this.fail(`both sides would run the guest (S ${this.sGuest}, D ${this.dGuest}${this.dToldRunning ? ', said running' : ''})`);
    if (this.sOutcome === 'done' && this.dPersisted?.phase !== 'complete' && this.dPersisted?.phase !== 'confirmed' && this.dOutcome !== 'confirmed' && this.dOutcome !== 'unconfirmed') {
      this.fail('S is done but D never made complete durable');
    }
    if (this.sOutcome === 'rolled-back' && this.dRunsGuest()) this.fail('S rolled back while D runs the guest');
  }

  // ---- heal: the network is back, every request succeeds, timers fire when nothing else moves ----

  /** One step of a cooperative world, or false when nothing is left to do. */
  healStep(sFirst = false): boolean {
    // A process that exited with its state kept is restarted (the operator, systemd).
    if (!this.sAlive && this.sOutcome === 'failed') {
      this.restartS();
      return true;
    }
    if (!this.dAlive && !this.dGone && this.dOutcome === 'stopped') {
      this.restartD();
      return true;
    }
    // Either side may move first: D's messages and requests, then S's, or the other way round.
    const dSide = (): boolean => {
      if (this.canDeliver('toD')) return this.deliver('toD'), true;
      const p = D_PENDING.find((x) => this.dPending.has(x) && x !== 'open-guest');
      return p !== undefined && (this.answerD(p, true), true);
    };
    const sSide = (): boolean => {
      if (this.canDeliver('toS')) return this.deliver('toS'), true;
      const p = S_PENDING.find((x) => this.sPending.has(x));
      return p !== undefined && (this.answerS(p, true), true);
    };
    if (sFirst ? sSide() || dSide() : dSide() || sSide()) return true;
    if (this.sTimers.has('reconnect')) return this.fireS('reconnect'), true;
    if (this.dTimers.has('confirm-grace')) return this.fireD('confirm-grace'), true;
    if (this.dTimers.has('abort-grace')) return this.fireD('abort-grace'), true;
    if (this.sTimers.has('prepared')) return this.fireS('prepared'), true;
    return false;
  }

  heal(): void {
    this.log.push('=== heal ===');
    let steps = 0;
    let futile = 0;
    while (this.healStep()) {
      this.check();
      if (++steps > HEAL_STEPS) this.fail(`heal: still moving after ${HEAL_STEPS} steps`);
      // S trying again and again to reach a D that is gone, or that no longer knows the session: nothing will change.
      const last = this.log[this.log.length - 1] ?? '';
      futile = /connect-failed\(PC_ERR_(LINK_CLOSED|AUTH)\)/.test(last) && (!this.dAlive || this.d.ctx.keys === null) ? futile + 1 : futile;
      if (futile > 5) break;
    }
    const s = this.sOutcome;
    const d = this.dGone ? 'gone' : this.dOutcome;
    const bothDone = s === 'done' && (d === 'confirmed' || d === 'unconfirmed' || (d === 'gone' && this.dPersisted?.phase === 'confirmed'));
    const bothRolledBack = s === 'rolled-back' && !this.dRunsGuest() && (d === 'rolled-back' || d === 'gone' || d === 'stopped' || this.d.phase === 'listening');
    if (bothDone || bothRolledBack) return;
    // S stranded: it sent its final state (or serves after cut-over) and never learns D's outcome, or learned a wrong
    // one. Safe (no guest runs twice, S never guesses) but not live: it needs the operator. Exempt only when a cause
    // listed in KNOWN_GAPS happened in this run (recorded when it happened); SESSIONS_STRICT=1 exempts nothing.
    const stranded = s !== 'rolled-back' && s !== 'done' && this.sGuest !== 'running';
    const why = KNOWN_GAPS.find((g) => this.causes.has(g));
    if (stranded && why !== undefined && !STRICT) return void strandings.push(why);
    this.fail(`heal: no agreed outcome: S ${s ?? this.s.phase}, D ${d ?? this.d.phase}`);
  }
}

/** The trace of a failing run: all of it if short, else its start and its end, repeated lines folded. */
function trace(log: string[]): string[] {
  const folded: string[] = [];
  for (const line of log) {
    const prev = folded[folded.length - 1];
    if (prev !== undefined && prev.replace(/ \(×\d+\)$/, '') === line) {
      const n = Number(/ \(×(\d+)\)$/.exec(prev)?.[1] ?? '1') + 1;
      folded[folded.length - 1] = `${line} (×${n})`;
    } else folded.push(line);
  }
  return folded.length <= 150 ? folded : [...folded.slice(0, 60), '…', ...folded.slice(-80)];
}

function describeS(e: SourceEvent): string {
  if (e.type === 'peer') return `peer:${e.msg.type}${e.msg.type === 'FINISH_RESULT' ? `(${e.msg.running})` : ''}`;
  if (e.type === 'connected') return `connected(D ${e.destPhase})`;
  if (e.type === 'connect-failed') return `connect-failed(${e.error.code})`;
  if (e.type === 'timer') return `timer:${e.name}`;
  if (e.type === 'final-check-done') return `final-check-done(bad ${e.bad.length})`;
  return e.type;
}
function describeSEffect(f: SourceEffect): string {
  if (f.type === 'send') return `send ${f.msg.type}`;
  if (f.type === 'persist') return `persist ${f.phase}`;
  if (f.type === 'arm-timer' || f.type === 'cancel-timer') return `${f.type} ${f.name}`;
  return f.type;
}
function describeD(e: DestEvent): string {
  if (e.type === 'peer') return `peer:${e.msg.type}`;
  if (e.type === 'timer') return `timer:${e.name}`;
  if ('result' in e) return `${e.type}(${e.result.ok ? 'ok' : 'failed'})`;
  if (e.type === 'restarted') return `restarted(${e.restart.kind} ${e.restart.phase})`;
  return e.type;
}
function describeDEffect(f: DestEffect): string {
  if (f.type === 'send') return `send ${f.msg.type}${f.msg.type === 'FINISH_RESULT' ? `(${f.msg.running})` : ''}`;
  if (f.type === 'persist') return `persist ${f.phase}`;
  if (f.type === 'arm-timer' || f.type === 'cancel-timer') return `${f.type} ${f.name}`;
  return f.type;
}

/**
 * Why a run may end with S stranded (paused after its final state, or serving after cut-over, never learning D's
 * outcome or learning a wrong one) without failing the heal check, unless SESSIONS_STRICT=1. Each is recorded in the
 * run when it happens. Safe (no guest runs on both sides, S never guesses) but not live:
 * - grace: D's abort-grace or confirm-grace ran out before S learned the outcome; D finished and left (the
 *   design's time-out).
 * - stop: the operator stopped D; its close() ends the session (the operator's doing).
 * - aborted-record: D crashed mid-rollback; its record says aborted and a restart refuses it (the operator is told
 *   to remove the state dir), so S, paused after its final state, learns only from the operator. Left open: a
 *   restart that finishes the rollback and tells S would change what the operator sees (test/e2e/operator-mistakes).
 * - forgotten-record: D's finish failed after postcopy was recorded and the state dir refused the aborted record, so
 *   D removed its record (a restart must not resume a session whose guest never ran here); S, paused after its final
 *   state, learns only from the operator (found by seed 481901248: before, the restart resumed postcopy without a
 *   guest and S finished: the guest lost).
 * Fixed since, now failures (each pinned by a scripted run below): D's WELCOME said postcopy before its guest had
 * started; a rollback told to S was not waited for; D's own I/O fault after cut-over left nothing watching the store.
 */
type Gap = (typeof KNOWN_GAPS)[number];
export const KNOWN_GAPS = ['grace', 'stop', 'aborted-record', 'forgotten-record'] as const;

/** Runs that ended with S stranded for a reason the heal check exempts (counted, printed). */
const strandings: string[] = [];

type Cmd = fc.Command<Joint, object>;
function cmd(name: string, check: (w: Joint) => boolean, run: (w: Joint) => void): Cmd {
  return {
    check,
    run: (w) => {
      w.log.push(`> ${name}`);
      run(w);
      w.check();
    },
    toString: () => name,
  };
}

/** The next thing a migration that goes well would see (S's side or D's first): weighted in, so runs reach the end. */
const progress = fc.boolean().map((sFirst) => cmd(`the migration moves on${sFirst ? ' (S first)' : ''}`, () => true, (w) => void w.healStep(sFirst)));

const commands: Array<fc.Arbitrary<Cmd>> = [
  ...Array.from({ length: 20 }, () => progress),
  fc.constantFrom('toD' as const, 'toS' as const).map((dir) => cmd(`deliver ${dir === 'toD' ? 'S→D' : 'D→S'}`, (w) => w.canDeliver(dir), (w) => w.deliver(dir))),
  ...Array.from({ length: 3 }, () => fc.constant(cmd('cut the link', (w) => w.linkAlive, (w) => w.cut()))),
  fc.tuple(fc.constantFrom(...S_PENDING), fc.boolean()).map(([p, ok]) => cmd(`S's ${p} ${ok ? 'succeeds' : 'fails'}`, (w) => w.sPending.has(p), (w) => w.answerS(p, ok))),
  fc.tuple(fc.constantFrom(...D_PENDING.filter((p) => p !== 'watch-complete')), fc.boolean()).map(([p, ok]) => cmd(`D's ${p} ${ok ? 'succeeds' : 'fails'}`, (w) => w.dPending.has(p), (w) => w.answerD(p, ok))),
  fc.constant(cmd("D's store is complete", (w) => w.dPending.has('watch-complete'), (w) => w.answerD('watch-complete', true))),
  fc.constantFrom('prepared' as const, 'reconnect' as const).map((n) => cmd(`S's timer ${n} fires`, (w) => w.sTimers.has(n), (w) => w.fireS(n))),
  fc.constantFrom<DestTimer>('abort-grace', 'confirm-grace').map((n) => cmd(`D's timer ${n} fires`, (w) => w.dTimers.has(n), (w) => w.fireD(n))),
  fc.constant(cmd('S crashes and restarts', (w) => w.sAlive, (w) => w.crashS())),
  fc.constant(cmd('D crashes and restarts', (w) => w.dAlive, (w) => w.crashD())),
  fc.constant(cmd('operator stops S', (w) => w.sAlive, (w) => w.toS({ type: 'abort', reason: 'SIGINT' }))),
  fc.constant(cmd('S stops serving (close)', (w) => w.sAlive, (w) => w.toS({ type: 'close' }))),
  fc.constant(cmd('operator stops D', (w) => w.dAlive, (w) => w.stopD())),
  fc.constant(cmd("D's digests differ from S's", () => true, (w) => void (w.diverged = true))),
  fc.constant(cmd("S's state dir fails its next write", () => true, (w) => void (w.sFailNextPersist = true))),
  fc.constant(cmd("D's state dir fails its next write", () => true, (w) => void (w.dFailNextPersist = true))),
];

/** What the runs reached (S phase/D phase before heal, S/D outcome after it): the commands are not all filtered away. */
const seen = { runs: 0, commands: 0, phases: new Set<string>(), dPhases: new Set<string>(), outcomes: new Map<string, number>() };
function runSequences(numRuns: number): void {
  fc.assert(
    fc.property(fc.boolean(), fc.commands(commands, { maxCommands: 80, size: 'large' }), (withGuest, cmds) => {
      const w = new Joint(withGuest);
      w.start();
      fc.modelRun(() => ({ model: w, real: {} }), cmds);
      seen.runs++;
      seen.commands += [...cmds].length;
      seen.phases.add(`${w.s.phase}/${w.d.phase}`);
      w.heal();
      const end = `${w.sOutcome ?? w.s.phase}/${w.dGone ? 'gone' : w.dOutcome ?? w.d.phase}`;
      seen.outcomes.set(end, (seen.outcomes.get(end) ?? 0) + 1);
    }),
    fcParams(numRuns),
  );
}

describe('both session cores together, against a model of the link, the adapters and crashes', () => {
  it(`keep DESIGN.md §1's invariants and always end agreed, over ${SEQUENCES} random sequences`, () => {
    const started = performance.now();
    runSequences(SEQUENCES);
    // eslint-disable-next-line no-console
    const counts = Object.fromEntries(KNOWN_GAPS.map((g) => [g, strandings.filter((x) => x === g).length]));
    // eslint-disable-next-line no-console
    console.log(`sessions model: ${fcRuns(SEQUENCES)} sequences, ${Math.round(seen.commands / Math.max(1, seen.runs))} commands each on average, in ${Math.round(performance.now() - started)} ms; S stranded (exempt, see KNOWN_GAPS): ${JSON.stringify(counts)}`);
    // The commands are not all filtered away: runs reach both good ends and the far phases of both cores.
    if (seen.runs >= 1000) {
      for (const o of ['done/confirmed', 'rolled-back/rolled-back']) expect(seen.outcomes.get(o) ?? 0, `runs ending ${o}`).toBeGreaterThan(0);
      for (const p of ['postcopy/awaiting-confirm', 'awaiting-finish/finishing', 'postcopy/final-check']) expect(seen.phases.has(p), `runs passing ${p}`).toBe(true);
      expect([...seen.dPhases].sort()).toEqual(['awaiting-confirm', 'done', 'final-check', 'finishing', 'invalidating', 'listening', 'postcopy', 'preparing', 'receiving', 'rolling-back']);
    }
  }, 120_000);

  // Three core bugs this model found, as scripted runs: each stranded S before its fix; each must now end agreed.
  const scripted: Array<[string, boolean, (w: Joint) => void]> = [
    // D's guest loaded, postcopy persisted, start under way; the link drops; S resumes and reads WELCOME postcopy as
    // "running" (post-copy, image read-only); then the start fails and D rolls back, deleting its image.
    ['welcome-postcopy-before-start', true, (w) => {
      while (!w.dPending.has('start-guest')) w.healStep();
      w.cut();
      w.answerS('connect', true);
      w.answerD('start-guest', false);
    }],
    // The same start fails while the link is down: FINISH_RESULT false goes nowhere, D finishes without waiting.
    ['told-rollback-not-awaited', true, (w) => {
      while (!w.dPending.has('start-guest')) w.healStep();
      w.cut();
      w.answerD('start-guest', false);
      while (w.dPending.has('discard-created')) w.answerD('discard-created', true);
    }],
    // All blocks present, the digest read fails: D goes back to postcopy and nothing asks for the final check again.
    ['fault-after-cutover', false, (w) => {
      while (!w.dPending.has('compute-digests')) w.healStep();
      w.answerD('compute-digests', false);
    }],
  ];
  for (const [gap, withGuest, script] of scripted) {
    it(`fixed gap, scripted: ${gap} ends agreed`, () => {
      const w = new Joint(withGuest);
      w.start();
      const before = strandings.length;
      script(w);
      w.heal();
      expect(strandings.slice(before), w.log.join('\n')).toEqual([]);
    });
  }

  // Found by seed 481901248: the finish fails after postcopy was recorded, the aborted record cannot be written, the
  // operator stops D; the restart resumed postcopy without a guest and S finished: the guest was lost. Now the record
  // is removed instead, and S (paused) is stranded at worst, never finished.
  it('fixed: a failed finish whose aborted record cannot be written is never resumed as postcopy', () => {
    const w = new Joint(true);
    w.start();
    while (!w.dPending.has('start-guest')) w.healStep();
    w.dFailNextPersist = true;
    w.answerD('start-guest', false);
    w.stopD();
    w.heal();
    expect(w.sOutcome, w.log.join('\n')).not.toBe('done');
  });

  it('a migration with nothing going wrong ends confirmed on both sides', () => {
    for (const withGuest of [true, false]) {
      const w = new Joint(withGuest);
      w.start();
      w.heal();
      expect([w.sOutcome, w.dOutcome]).toEqual(['done', 'confirmed']);
    }
  });
});
