// Model-based test of D's session core (src/dest/dest-core.ts): random sequences of what can happen to D (S's
// messages in and out of order, link loss and resume, timers, adapter results ok and failed, digest mismatches,
// local faults, crashes and restarts from the last persisted record, operator stops), with DESIGN.md §1's
// invariants as they apply to D checked at every effect and after every command. No sockets, no files.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { initialState, step } from '../../src/dest/dest-core.js';
import type { Created, DestEffect, DestEvent, DestPhase, DestState, Failure, TimerName } from '../../src/dest/dest-core-types.js';
import type { ImageFile } from '../../src/dest/block-store.js';
import type { Message } from '../../src/protocol/messages.js';
import { DEST_PHASE_EDGES } from '../helpers/dest-phase-order.js';
import { fcParams } from '../helpers/fc.js';

const CI = process.env.CI === 'true';
/** Sequences per run: ≥ 10 000 in CI; a local run takes a few seconds. */
const SEQUENCES = CI ? 10_000 : 1_000;

const IMAGE: ImageFile = { created: true, identity: { dev: '1', ino: '2' }, priorSize: 0 };
const KEYS = { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32) };
const BOOM: Failure = { code: 'PC_ERR_BACKEND', message: 'injected failure' };

type Pending = Extract<DestEffect, { type: 'prepare-store' | 'start-export' | 'prepare-guest' | 'open-guest' | 'load-guest' | 'start-guest' | 'watch-complete' | 'compute-digests' | 'invalidate' | 'discard-created' }>['type'];

interface Persisted {
  phase: DestPhase;
  created: Created;
  geometry: { size: number; blockSize: number } | null;
}

/** D as the world around its core sees it, plus what S has been told. */
class World {
  state: DestState = initialState(true);
  /** One D process: reset by a crash. */
  pending = new Set<Pending>();
  timers = new Set<TimerName>();
  linkUp = false;
  finished: string | null = null;
  /** Across crashes: the disk. */
  persisted: Persisted | null = null;
  /** What this session created on disk (the store adapter's answer), what exists now. */
  createdBySession: Created = { image: null, bitmap: false };
  exists = { image: false, bitmap: false };
  /** What S has been told. */
  cutOver = false;
  toldNotRunning = false;
  guestLoaded = false;
  storeComplete = false;
  digestsFresh = false;
  confirmed = false;
  failNextPersist = false;
  gone = false;

  #queue: DestEvent[] = [];
  #stepping = false;

  /** As the shell does: events caused by effects wait until the batch that caused them has run. */
  deliver(event: DestEvent): void {
    this.#queue.push(event);
    if (this.#stepping) return;
    this.#stepping = true;
    try {
      for (let e = this.#queue.shift(); e; e = this.#queue.shift()) this.#step(e);
    } finally {
      this.#stepping = false;
    }
  }

  #step(event: DestEvent): void {
    let r: ReturnType<typeof step>;
    try {
      r = step(this.state, event, 0);
    } catch (e) {
      throw new Error(`step threw on ${event.type} in ${this.state.phase}: ${(e as Error).message}`);
    }
    this.state = r.state;
    const batch = r.effects;
    for (let i = 0; i < batch.length; i++) {
      if (!this.apply(batch[i]!, batch, i)) {
        this.#queue.push({ type: 'local-fault', error: { code: 'PC_ERR_STATE_DIR', message: 'state dir unwritable' }, skipped: batch.slice(i + 1).map((e) => e.type) });
        return;
      }
    }
  }

  /** Run one effect against the world; false: a persist failed (the rest of the batch does not run). */
  apply(e: DestEffect, batch: DestEffect[], at: number): boolean {
    switch (e.type) {
      case 'persist': {
        if (this.failNextPersist) {
          this.failNextPersist = false;
          // A best-effort record that fails leaves the one before on disk, and the batch goes on.
          return e.bestEffort === true;
        }
        const from = this.persisted?.phase;
        if (from !== undefined && from !== e.phase) expect(DEST_PHASE_EDGES[from], `persisted ${from} -> ${e.phase}`).toContain(e.phase);
        if (e.phase === 'aborted') expect(this.cutOver, 'persisted aborted after cut-over').toBe(false);
        this.persisted = { phase: e.phase, created: this.state.ctx.created, geometry: this.state.ctx.geometry };
        return true;
      }
      case 'send':
        this.onSend(e.msg, batch, at);
        return true;
      case 'discard-created':
        expect(this.cutOver, 'deleted files after cut-over').toBe(false);
        // Only what this session created: never an image or bitmap it did not make.
        if (e.created.image) expect(this.createdBySession.image, 'discard names an image this session did not create').toBe(e.created.image);
        if (e.created.bitmap) expect(this.createdBySession.bitmap, 'discard names a bitmap this session did not create').toBe(true);
        this.pending.add('discard-created');
        return true;
      case 'start-guest':
        expect(this.toldNotRunning, 'guest started after telling S it does not run here').toBe(false);
        // With no guest the start is a formality the shell answers at once (it orders going live after the persist).
        if (this.state.ctx.guest) expect(this.guestLoaded, 'guest started before it loaded all its state').toBe(true);
        expect(this.persisted?.phase, 'guest started before postcopy was durable').toBe('postcopy');
        this.pending.add('start-guest');
        return true;
      case 'abort-guest':
        expect(this.cutOver, 'guest aborted after cut-over').toBe(false);
        return true;
      case 'arm-timer':
        this.timers.add(e.name);
        return true;
      case 'cancel-timer':
        this.timers.delete(e.name);
        return true;
      case 'close-link':
        // The link's close comes back as link-down, after this batch (as the shell's link does).
        if (this.linkUp) this.#queue.push({ type: 'link-down', error: { code: 'PC_ERR_LINK_CLOSED', message: 'closed by D' } });
        this.linkUp = false;
        return true;
      case 'finish':
        expect(this.finished, 'finished twice').toBeNull();
        this.finished = e.outcome.kind;
        if (e.outcome.kind === 'confirmed') expect(this.confirmed, 'done before CONFIRM').toBe(true);
        if (e.outcome.kind === 'unconfirmed') {
          expect(this.persisted?.phase, 'finished unconfirmed before complete was durable').toBe('complete');
          expect(this.linkUp, 'gave up waiting for CONFIRM with S connected').toBe(false);
        }
        if (e.outcome.kind === 'rolled-back') {
          expect(this.cutOver, 'rolled back after cut-over').toBe(false);
          expect(this.exists.image && this.createdBySession.image !== null, 'rollback reported before its image was deleted').toBe(false);
        }
        return true;
      case 'prepare-store':
      case 'start-export':
      case 'prepare-guest':
      case 'open-guest':
      case 'load-guest':
      case 'watch-complete':
      case 'compute-digests':
      case 'invalidate':
        if (e.type === 'invalidate') this.digestsFresh = false;
        this.pending.add(e.type);
        return true;
      default:
        return true;
    }
  }

  onSend(msg: Message, batch: DestEffect[], at: number): void {
    if (msg.type === 'FINISH_RESULT' && msg.running) {
      expect(this.toldNotRunning, 'said running after not running').toBe(false);
      this.cutOver = true;
    }
    if ((msg.type === 'FINISH_RESULT' && !msg.running) || msg.type === 'ABORT') {
      expect(this.cutOver, 'told S not running after cut-over').toBe(false);
      this.toldNotRunning = true;
      // Said before anything of it is undone: the discard comes after, in the same batch.
      expect(batch.slice(0, at).some((x) => x.type === 'discard-created'), 'rollback started before S was told').toBe(false);
    }
    if (msg.type === 'COMPLETE') {
      expect(this.storeComplete, 'COMPLETE before the store said complete').toBe(true);
      expect(this.digestsFresh, 'COMPLETE without digests of the current blocks').toBe(true);
      expect(this.persisted?.phase, 'COMPLETE before complete was durable').toBe('complete');
    }
  }

  /** Resolve a pending adapter operation with `ok`. */
  resolve(p: Pending, ok: boolean): void {
    this.pending.delete(p);
    const result = ok ? ({ ok: true } as const) : ({ ok: false, error: BOOM } as const);
    switch (p) {
      case 'prepare-store':
        // The store adapter creates the bitmap, then the image; a failure may leave only the bitmap.
        this.createdBySession = ok ? { image: IMAGE, bitmap: true } : { image: null, bitmap: true };
        this.exists = { image: ok, bitmap: true };
        return this.deliver({ type: 'store-prepared', result, created: this.createdBySession });
      case 'start-export':
        return this.deliver({ type: 'export-started', result });
      case 'prepare-guest':
        return this.deliver({ type: 'guest-prepared', result });
      case 'open-guest':
        return ok ? undefined : this.deliver({ type: 'guest-load-failed', error: BOOM });
      case 'load-guest':
        this.guestLoaded = ok;
        this.pending.delete('open-guest');
        return this.deliver({ type: 'guest-loaded', result });
      case 'start-guest':
        return this.deliver({ type: 'guest-started', result });
      case 'watch-complete':
        this.storeComplete = true;
        return this.deliver({ type: 'store-complete' });
      case 'compute-digests':
        if (!ok) return this.deliver({ type: 'local-fault', error: BOOM });
        this.digestsFresh = true;
        return this.deliver({ type: 'digests-ready', digests: { blocks: [1, 2], crcs: [3, 4] } });
      case 'invalidate':
        // ok: the mismatch invalidates blocks; not ok here means "invalidates nothing".
        if (ok) this.storeComplete = false;
        return this.deliver({ type: 'invalidated', again: ok ? 2 : 0 });
      case 'discard-created':
        if (this.createdBySession.image) this.exists.image = false;
        if (this.createdBySession.bitmap) this.exists.bitmap = false;
        return this.deliver({ type: 'discarded' });
    }
  }

  /** D's process dies: everything not persisted is lost; a restart continues from the record, as planStart decides. */
  crashAndRestart(): void {
    this.pending.clear();
    this.timers.clear();
    this.linkUp = false;
    this.finished = null;
    this.guestLoaded = false;
    const saved = this.persisted;
    if (!saved) {
      // Nothing on record: whatever S does next is a new migration.
      this.state = initialState(true);
      Object.assign(this, { cutOver: false, toldNotRunning: false, confirmed: false, storeComplete: false, digestsFresh: false, createdBySession: { image: null, bitmap: false } });
      return;
    }
    if (saved.phase === 'confirmed' || saved.phase === 'aborted') {
      // planStart refuses such a state dir: this D is gone for good.
      this.gone = true;
      return;
    }
    this.state = initialState(true);
    const kind = saved.phase === 'postcopy' || saved.phase === 'complete' ? 'resume' : 'rollback';
    // A restart past postcopy resumes: from here on D behaves as after cut-over (S may have let go).
    if (kind === 'resume') this.cutOver = true;
    this.deliver({ type: 'restarted', restart: { kind, phase: saved.phase, keys: KEYS, geometry: saved.geometry!, image: saved.created.image, stateDirCreated: true } });
  }
}

type Cmd = fc.Command<World, object>;

function cmd(name: string, check: (w: World) => boolean, run: (w: World) => void): Cmd {
  return {
    check: (w) => !w.gone && w.finished === null && check(w),
    run: (w) => {
      run(w);
      invariantsHold(w);
    },
    toString: () => name,
  };
}

/** Checked after every command, beyond the per-effect checks. */
function invariantsHold(w: World): void {
  if (w.cutOver) expect(w.state.phase, 'rolling back after cut-over').not.toBe('rolling-back');
  if (w.state.phase === 'done' && w.state.outcome.kind === 'confirmed') expect(['confirmed', 'complete']).toContain(w.persisted?.phase);
}

const sim = { persistent: { kind: 'sim' }, transient: {} };
const peerMessages: Array<[string, (w: World) => Message]> = [
  ['BEGIN(sim)', () => ({ type: 'BEGIN', guest: sim, size: 1 << 20, blockSize: 65536, cookie: 'c' })],
  ['BEGIN(no guest)', () => ({ type: 'BEGIN', guest: null, size: 1 << 20, blockSize: 65536, cookie: 'c' })],
  ['BEGIN(bad block size)', () => ({ type: 'BEGIN', guest: null, size: 1 << 20, blockSize: 1000, cookie: 'c' })],
  ['RAM_PAGES', () => ({ type: 'RAM_PAGES', indices: [], data: Buffer.alloc(0) })],
  ['GUEST_STREAM_END', () => ({ type: 'GUEST_STREAM_END' })],
  ['RAM_ROUND_END', () => ({ type: 'RAM_ROUND_END', round: 1, pagesSent: 1, dirtyRemaining: 0 })],
  ['DEVICE_STATE', () => ({ type: 'DEVICE_STATE', state: {}, ramDigest: '00' })],
  ['EXTENTS', () => ({ type: 'EXTENTS', runs: [] })],
  ['EXTENTS_END', () => ({ type: 'EXTENTS_END', count: 0 })],
  ['CONFIRM', () => ({ type: 'CONFIRM' })],
  ['DIGEST_MISMATCH', () => ({ type: 'DIGEST_MISMATCH', blocks: [1] })],
  ['ABORT', () => ({ type: 'ABORT', reason: 'operator' })],
  ['ERROR', () => ({ type: 'ERROR', code: 'PC_ERR_PEER', message: 'x' })],
  ['PREPARED (not for D)', () => ({ type: 'PREPARED', cookie: 'c' })],
];

const commands: Array<fc.Arbitrary<Cmd>> = [
  fc.constantFrom(...peerMessages).map(([name, make]) =>
    cmd(`S sends ${name}`, (w) => w.linkUp, (w) => {
      const msg = make(w);
      if (msg.type === 'CONFIRM' && w.state.phase === 'awaiting-confirm') w.confirmed = true;
      w.deliver({ type: 'peer', msg });
    }),
  ),
  fc.constant(cmd('S connects (new or resumed)', (w) => !w.linkUp, (w) => {
    w.linkUp = true;
    w.deliver({ type: 'link-up', keys: KEYS, resumed: w.state.ctx.keys !== null });
  })),
  fc.constant(cmd('link lost', (w) => w.linkUp, (w) => {
    w.linkUp = false;
    w.deliver({ type: 'link-down', error: { code: 'PC_ERR_LINK_CLOSED', message: 'cut' } });
  })),
  fc.constantFrom<TimerName>('abort-grace', 'confirm-grace').map((name) =>
    cmd(`timer ${name} fires`, (w) => w.timers.has(name), (w) => {
      w.timers.delete(name);
      w.deliver({ type: 'timer', name });
    }),
  ),
  fc.tuple(fc.constantFrom<Pending>('prepare-store', 'start-export', 'prepare-guest', 'open-guest', 'load-guest', 'start-guest', 'watch-complete', 'compute-digests', 'invalidate', 'discard-created'), fc.boolean()).map(([p, ok]) =>
    cmd(`${p} ${ok ? 'succeeds' : 'fails'}`, (w) => w.pending.has(p), (w) => w.resolve(p, ok)),
  ),
  fc.constant(cmd('the next persist fails', () => true, (w) => void (w.failNextPersist = true))),
  fc.constant(cmd('a local I/O fault', () => true, (w) => w.deliver({ type: 'local-fault', error: BOOM }))),
  fc.constant(cmd('a peer violation (frame beyond credit)', (w) => w.linkUp, (w) => w.deliver({ type: 'peer-violation', error: { code: 'PC_ERR_MALFORMED', message: 'beyond credit' } }))),
  fc.constant(cmd('D crashes and restarts', () => true, (w) => w.crashAndRestart())),
  fc.constant(cmd('operator stops D', () => true, (w) => w.deliver({ type: 'stop' }))),
];

/** The next thing a migration that goes well would see: weighted in, so runs reach the far phases too. */
function advance(w: World): void {
  const next = nextExpected(w);
  if (next) next();
}

function nextExpected(w: World): (() => void) | null {
  const ok = (p: Pending) => (w.pending.has(p) ? () => w.resolve(p, true) : null);
  const send = (msg: Message) => (w.linkUp ? () => {
    if (msg.type === 'CONFIRM') w.confirmed = true;
    w.deliver({ type: 'peer', msg });
  } : () => { w.linkUp = true; w.deliver({ type: 'link-up', keys: KEYS, resumed: w.state.ctx.keys !== null }); });
  switch (w.state.phase) {
    case 'listening':
      return send(peerMessages[w.state.ctx.keys ? 0 : 1]![1](w));
    case 'preparing':
      return ok('prepare-store') ?? ok('start-export') ?? ok('prepare-guest');
    case 'receiving':
      return send({ type: 'DEVICE_STATE', state: {}, ramDigest: '00' });
    case 'finishing':
      return ok('load-guest') ?? ok('start-guest');
    case 'postcopy':
      return ok('watch-complete');
    case 'final-check':
      return ok('compute-digests');
    case 'invalidating':
      return ok('invalidate');
    case 'awaiting-confirm':
      return send({ type: 'CONFIRM' });
    case 'rolling-back':
      return ok('discard-created');
    case 'done':
      return null;
  }
}

commands.push(
  ...Array.from({ length: 3 }, () =>
    fc.constant(cmd("S's final check finds blocks that differ", (w) => w.linkUp && w.state.phase === 'awaiting-confirm', (w) => w.deliver({ type: 'peer', msg: { type: 'DIGEST_MISMATCH', blocks: [1] } }))),
  ),
);
commands.push(...Array.from({ length: 24 }, () => fc.constant(cmd('the migration takes its next expected step', (w) => nextExpected(w) !== null, advance))));

describe("D's session core against a model of the migration", () => {
  it(`keeps DESIGN.md §1's invariants over ${SEQUENCES} random sequences`, () => {
    const started = performance.now();
    fc.assert(
      fc.property(fc.commands(commands, { maxCommands: 60, size: 'large' }), (cmds) => {
        fc.modelRun(() => ({ model: new World(), real: {} }), cmds);
      }),
      fcParams(SEQUENCES),
    );
    // eslint-disable-next-line no-console
    console.log(`dest-core model: ${SEQUENCES} sequences in ${Math.round(performance.now() - started)} ms`);
  }, 120_000);

  it('reaches every phase of the core (the commands are not all filtered away)', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(fc.commands(commands, { maxCommands: 80, size: 'large' }), (cmds) => {
        const w = new World();
        const original = w.deliver.bind(w);
        w.deliver = (e) => {
          original(e);
          seen.add(w.state.phase);
        };
        fc.modelRun(() => ({ model: w, real: {} }), cmds);
      }),
      fcParams(3_000),
    );
    expect([...seen].sort()).toEqual(['awaiting-confirm', 'done', 'final-check', 'finishing', 'invalidating', 'listening', 'postcopy', 'preparing', 'receiving', 'rolling-back']);
  }, 120_000);
});
