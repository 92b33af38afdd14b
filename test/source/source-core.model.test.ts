// Model-based tests of S's session core (src/source/source-core.ts): random sequences of D's messages (in order,
// out of order, repeated), link losses, connect results with D's phase in WELCOME, timers, adapter results,
// operator signals and S crashing and restarting from what it last persisted. After every command the world is
// checked against DESIGN.md §1's invariants as S can break them. No sockets: thousands of sequences a second.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AuthError, BackendError, BusyError, LinkClosedError } from '../../src/common/errors.js';
import type { Message } from '../../src/protocol/messages.js';
import { initialState, publicPhase, step, type SourceConfig, type SourceEffect, type SourceEvent, type SourceState } from '../../src/source/source-core.js';
import { fcParams } from '../helpers/fc.js';

const BLOCK = 4096;
const CFG: SourceConfig = { size: 8 * BLOCK, blockSize: BLOCK, connectTimeoutMs: 5000, resumeTimeoutMs: 60_000, backoff: { initialMs: 100, maxMs: 5000 }, preparedWaitMs: 60_000 };
const PHASE_RANK: Record<string, number> = { begin: 1, perform: 2, 'awaiting-finish': 3, postcopy: 4 };
const PRECOPY = { rounds: 1, pagesSent: 1, bytesSent: 4096, finalPages: 0, bandwidthBytesPerSec: 0, converged: true, pausedAtEpochMs: 0 };

/** S's core inside a world that remembers what S did and what D said, and checks the invariants as it goes. */
class World {
  state: SourceState = initialState();
  now = 1_000_000;
  /** What S last persisted (null: nothing, or removed). */
  persisted: { sessionId: string; resumeKey: string; phase: string } | null = null;
  /** The final state (DEVICE_STATE) was sent in this migration: from then on only D's "not running" lets S resume. */
  finalStateSent = false;
  /** D said it does not run the guest (FINISH_RESULT false, ABORT before its answer, or its phase at a resume). */
  dSaidNotRunning = false;
  /** The link generation on which D sent COMPLETE, and whether S asked for its final check. */
  checkAsked = false;
  connectPending = false;
  precopyPending = false;
  timers = new Set<string>();
  outcome: 'finish' | 'rollback' | 'fail' | null = null;
  /** The state dir's disk fails the next write. */
  failNextPersist = false;
  sessions = 0;
  /** What happened, formatted only when an invariant fails. */
  log: Array<[string, SourceEvent, string, SourceEffect[]] | string> = [];

  constructor(public readonly bugs: { resumeOnFinishLoss?: boolean } = {}) {}

  get phase(): string {
    return this.state.phase;
  }
  get linkUp(): boolean {
    const s = this.state;
    return s.phase === 'awaiting-prepared' || s.phase === 'precopy' || ((s.phase === 'awaiting-finish' || s.phase === 'postcopy') && s.link === 'up');
  }

  /** One event into the core (never throws: an illegal pair is a transition), then every invariant. */
  deliver(e: SourceEvent): SourceEffect[] {
    this.now += 7;
    const before = this.state;
    const { state, effects } = step(CFG, before, e, this.now);
    this.log.push([before.phase, e, state.phase, effects]);
    this.state = state;
    for (const f of effects) {
      if (f.type === 'persist' && this.failNextPersist) {
        // The shell stops at a failed effect and reports it; nothing after it ran.
        this.failNextPersist = false;
        this.deliver({ type: 'local-failure', effect: 'persist', error: new BackendError('PC_ERR_BACKEND', 'ENOSPC') });
        return effects;
      }
      this.apply(f, e);
    }
    // The shell closes the link it was told to close: its close comes back as link-down.
    if (effects.some((f) => f.type === 'close-link') && this.linkUp) this.deliver({ type: 'link-down', gen: this.state.ctx.gen, error: null });
    return effects;
  }

  apply(f: SourceEffect, cause: SourceEvent): void {
    const fail = (why: string) => {
      const lines = this.log.map((l) => (typeof l === 'string' ? l : `${l[0]} --${l[1].type}${l[1].type === 'peer' ? `:${l[1].msg.type}` : ''}--> ${l[2]} [${l[3].map((f) => f.type).join(',')}]`));
      throw new Error(`${why}\n${lines.join('\n')}`);
    };
    switch (f.type) {
      case 'persist': {
        const last = this.persisted ? PHASE_RANK[this.persisted.phase]! : 0;
        if (PHASE_RANK[f.phase]! < last) fail(`persisted phase went back: ${this.persisted!.phase} -> ${f.phase}`);
        this.persisted = { ...f.keys, phase: f.phase };
        break;
      }
      case 'remove-state':
        this.persisted = null;
        break;
      case 'send-device-state':
        if (this.persisted?.phase !== 'awaiting-finish') fail('final state sent before awaiting-finish was persisted');
        this.finalStateSent = true;
        break;
      case 'start-guest':
      case 'resume-guest':
        if (this.finalStateSent && !this.dSaidNotRunning) fail(`${f.type} after the final state was sent, and D never said "not running"`);
        break;
      case 'finish':
        if (cause.type !== 'final-check-done' || cause.bad.length > 0 || !this.checkAsked) fail('finished without a passed final check after COMPLETE');
        this.setOutcome('finish', fail);
        break;
      case 'rollback':
        if (this.finalStateSent && !this.dSaidNotRunning) fail('rolled back after the final state was sent, and D never said "not running"');
        this.setOutcome('rollback', fail);
        break;
      case 'fail':
        // Stopping past cut-over (state kept, guest left paused) only once the final state really went out.
        if (!this.finalStateSent) fail('stopped as if past cut-over, but the final state was never sent');
        this.setOutcome('fail', fail);
        break;
      case 'final-check':
        this.checkAsked = true;
        break;
      case 'connect':
        this.connectPending = true;
        break;
      case 'start-precopy':
        this.precopyPending = true;
        break;
      case 'arm-timer':
        this.timers.add(f.name);
        break;
      case 'cancel-timer':
        this.timers.delete(f.name);
        break;
      default:
    }
  }

  setOutcome(o: 'finish' | 'rollback' | 'fail', fail: (why: string) => never): void {
    if (this.outcome !== null) fail(`a second outcome (${o} after ${this.outcome})`);
    this.outcome = o;
  }

  /** S crashes: everything not persisted is gone; it restarts from its state file, or anew. */
  crash(): void {
    this.state = initialState();
    this.connectPending = this.precopyPending = false;
    this.checkAsked = false;
    this.timers.clear();
    this.outcome = null;
    this.log.push('--- crash ---');
    const p = this.persisted;
    if (p && (p.phase === 'awaiting-finish' || p.phase === 'postcopy')) {
      this.deliver({ type: 'restarted', saved: { sessionId: p.sessionId, resumeKey: p.resumeKey, phase: p.phase } });
    } else {
      this.start();
    }
  }

  start(): void {
    // A fresh migration: what D said of an earlier one no longer counts.
    this.finalStateSent = false;
    this.dSaidNotRunning = false;
    this.persisted = null;
    this.sessions++;
    this.deliver({ type: 'start' });
  }
}

type Cmd = fc.Command<World, World>;
const cmd = (name: string, check: (w: World) => boolean, run: (w: World) => void): Cmd => ({
  check,
  run: (_m, w) => run(w),
  toString: () => name,
});

const peer = (name: string, msg: Message, notRunning = false) =>
  cmd(name, (w) => w.linkUp, (w) => {
    if (notRunning && w.finalStateSent) w.dSaidNotRunning = true;
    w.deliver({ type: 'peer', msg });
  });

const DEST_PHASES = ['postcopy', 'complete', 'confirmed', 'aborted', 'prepared', 'receiving-ram', 'finishing', 'awaiting-finish'];

/** A cooperative D (and a working network): the next thing that moves this migration on. */
const advance = (destPhase: string): Cmd =>
  cmd(`advance (D in ${destPhase} if asked)`, () => true, (w) => {
    const s = w.state;
    if (w.outcome !== null) return w.crash();
    if (w.connectPending) {
      w.connectPending = false;
      if (w.finalStateSent && ['aborted', 'prepared', 'receiving-ram'].includes(destPhase)) w.dSaidNotRunning = true;
      return void w.deliver({ type: 'connected', sessionId: `s${w.sessions}`, resumeKey: 'ab', destPhase, version: 1 });
    }
    if (w.timers.has('reconnect')) {
      w.timers.delete('reconnect');
      return void w.deliver({ type: 'timer', name: 'reconnect' });
    }
    if (s.phase === 'awaiting-prepared') return void w.deliver({ type: 'peer', msg: { type: 'PREPARED', cookie: 'c' } });
    if (s.phase === 'precopy' && w.precopyPending) {
      w.precopyPending = false;
      return void w.deliver({ type: 'precopy-done', final: { precopy: PRECOPY, state: {}, ramDigest: 'd' } });
    }
    if (s.phase === 'awaiting-finish' && s.link === 'up') return void w.deliver({ type: 'peer', msg: { type: 'FINISH_RESULT', running: true } });
    if (s.phase === 'postcopy' && s.link === 'up') {
      if (!s.checking) return void w.deliver({ type: 'peer', msg: { type: 'COMPLETE', pristineBlocks: s.tally.received } });
      return void w.deliver({ type: 'final-check-done', gen: s.ctx.gen, bad: [] });
    }
  });

const commands: fc.Arbitrary<Cmd>[] = [
  ...Array.from({ length: 12 }, () => fc.constantFrom(...DEST_PHASES).map(advance)),
  fc.constant(peer('PREPARED', { type: 'PREPARED', cookie: 'c' })),
  fc.constant(peer('CREDIT', { type: 'CREDIT', bytes: 4096 })),
  fc.boolean().map((running) => peer(`FINISH_RESULT ${running}`, { type: 'FINISH_RESULT', running, ...(running ? {} : { error: 'x' }) }, !running)),
  fc.array(fc.tuple(fc.nat(9), fc.nat(3)), { maxLength: 4 }).chain((entries) =>
    fc.array(fc.option(fc.nat(3), { nil: undefined }), { minLength: entries.length, maxLength: entries.length }).map((sent) =>
      cmd(`BLOCK_DIGESTS ${JSON.stringify(entries)}`, (w) => w.linkUp, (w) => void w.deliver({ type: 'peer', msg: { type: 'BLOCK_DIGESTS', entries: entries as Array<[number, number]> }, sent })),
    ),
  ),
  fc.nat(6).map((n) => peer(`COMPLETE ${n}`, { type: 'COMPLETE', pristineBlocks: n })),
  fc.constant(
    // D's ABORT says "not running" only while S awaits its Finish answer (after it, D runs the guest regardless).
    cmd('ABORT', (w) => w.linkUp, (w) => {
      if (w.finalStateSent && w.phase === 'awaiting-finish') w.dSaidNotRunning = true;
      w.deliver({ type: 'peer', msg: { type: 'ABORT', reason: 'd' } });
    }),
  ),
  fc.constant(peer('ERROR', { type: 'ERROR', code: 'PC_ERR_PEER', message: 'x' })),
  fc.constant(peer('WELCOME (out of place)', { type: 'WELCOME', sessionId: 's', resumed: true, phase: 'postcopy' })),
  fc.constant(cmd('link-down', (w) => w.linkUp, (w) => void w.deliver({ type: 'link-down', gen: w.state.ctx.gen, error: new LinkClosedError('PC_ERR_LINK_CLOSED') }))),
  fc.constant(cmd('link-down (old link)', () => true, (w) => void w.deliver({ type: 'link-down', gen: w.state.ctx.gen - 1, error: null }))),
  fc.constantFrom(...DEST_PHASES).map((destPhase) =>
    cmd(`connected (D in ${destPhase})`, (w) => w.connectPending, (w) => {
      w.connectPending = false;
      if (w.finalStateSent && ['aborted', 'prepared', 'receiving-ram'].includes(destPhase)) w.dSaidNotRunning = true;
      w.deliver({ type: 'connected', sessionId: `s${w.sessions}`, resumeKey: 'ab', destPhase, version: 1 });
    }),
  ),
  fc.constantFrom('socket', 'busy', 'auth').map((why) =>
    cmd(`connect-failed ${why}`, (w) => w.connectPending, (w) => {
      w.connectPending = false;
      const error = why === 'auth' ? new AuthError('PC_ERR_AUTH') : why === 'busy' ? new BusyError('PC_ERR_BUSY') : new LinkClosedError('PC_ERR_LINK_CLOSED');
      w.deliver({ type: 'connect-failed', error, stage: why === 'socket' ? 'socket' : 'handshake', jitter: 0.5 });
    }),
  ),
  fc.constantFrom('prepared' as const, 'reconnect' as const).map((name) =>
    cmd(`timer ${name}`, (w) => w.timers.has(name), (w) => {
      w.timers.delete(name);
      w.now += 60_000;
      w.deliver({ type: 'timer', name });
    }),
  ),
  fc.boolean().map((ok) =>
    cmd(`precopy ${ok ? 'done' : 'failed'}`, (w) => w.precopyPending, (w) => {
      w.precopyPending = false;
      w.deliver(ok ? { type: 'precopy-done', final: { precopy: PRECOPY, state: {}, ramDigest: 'd' } } : { type: 'precopy-failed', error: new LinkClosedError('PC_ERR_LINK_CLOSED') });
    }),
  ),
  fc.tuple(fc.boolean(), fc.boolean()).map(([clean, current]) =>
    cmd(`final check ${clean ? 'passed' : 'mismatched'}${current ? '' : ' (old link)'}`, () => true, (w) => {
      const gen = current ? w.state.ctx.gen : w.state.ctx.gen - 1;
      const effects = w.deliver({ type: 'final-check-done', gen, bad: clean ? [] : [1] });
      if (effects.some((f) => f.type === 'send' && f.msg.type === 'DIGEST_MISMATCH')) w.checkAsked = false;
    }),
  ),
  fc.constant(cmd('extents done', () => true, (w) => void w.deliver({ type: 'extents-done' }))),
  fc.constant(
    cmd('operator abort', () => true, (w) => {
      const past = w.finalStateSent;
      const before = w.state;
      const effects = w.deliver({ type: 'abort', reason: 'SIGINT' });
      if (past && before.phase !== 'idle' && before.phase !== 'rolled-back') {
        // After cut-over a stop request is refused: nothing changes.
        expect(w.state).toBe(before);
        expect(effects.map((f) => f.type)).toEqual(['log']);
      }
    }),
  ),
  fc.constant(cmd('close', () => true, (w) => void w.deliver({ type: 'close' }))),
  fc.constant(cmd('state disk fails the next write', () => true, (w) => void (w.failNextPersist = true))),
  fc.constant(cmd('crash and restart', () => true, (w) => w.crash())),
];

function run(world: () => World, numRuns: number): void {
  fc.assert(
    fc.property(fc.commands(commands, { maxCommands: 60, size: 'large' }), (cmds) => {
      const w = world();
      w.start();
      fc.modelRun(() => ({ model: w, real: w }), cmds);
    }),
    fcParams(numRuns),
  );
}

/** Sequences per run: at least 10 000 in CI; a few seconds' worth locally (FC_RUNS scales either). */
const SEQUENCES = process.env.CI === 'true' ? 10_000 : 5_000;

describe("S's session core against a model of the migration", () => {
  it('keeps the invariants after every command', () => {
    const started = performance.now();
    run(() => new World(), SEQUENCES);
    console.info(`source-core model: ${SEQUENCES} sequences (scaled by FC_RUNS) in ${Math.round(performance.now() - started)} ms`);
  });

  it('never throws, whatever event comes in whatever phase', () => {
    const anyEvent: fc.Arbitrary<SourceEvent> = fc.oneof(
      fc.constantFrom<SourceEvent>(
        { type: 'start' },
        { type: 'abort', reason: 'x' },
        { type: 'close' },
        { type: 'timer', name: 'prepared' },
        { type: 'timer', name: 'reconnect' },
        { type: 'extents-done' },
        { type: 'extents-failed', error: new Error('x') },
        { type: 'precopy-done', final: { precopy: null, state: {}, ramDigest: '' } },
        { type: 'precopy-failed', error: new LinkClosedError('PC_ERR_LINK_CLOSED') },
        { type: 'restarted', saved: { sessionId: 's', resumeKey: 'ab', phase: 'postcopy' } },
        { type: 'connect-failed', error: new AuthError('PC_ERR_AUTH'), stage: 'handshake', jitter: 0 },
        { type: 'connect-failed', error: new LinkClosedError('PC_ERR_LINK_CLOSED'), stage: 'socket', jitter: 0.9 },
      ),
      fc.nat(3).map((gen): SourceEvent => ({ type: 'link-down', gen, error: null })),
      fc.tuple(fc.nat(3), fc.boolean()).map(([gen, ok]): SourceEvent => ({ type: 'final-check-done', gen, bad: ok ? [] : [0] })),
      fc.constantFrom(...DEST_PHASES).map((destPhase): SourceEvent => ({ type: 'connected', sessionId: 's', resumeKey: 'ab', destPhase, version: 1 })),
      fc.constantFrom<Message>(
        { type: 'PREPARED', cookie: 'c' },
        { type: 'FINISH_RESULT', running: true },
        { type: 'FINISH_RESULT', running: false },
        { type: 'COMPLETE', pristineBlocks: 0 },
        { type: 'BLOCK_DIGESTS', entries: [[0, 1], [99, 2]] },
        { type: 'ABORT', reason: 'x', code: 'PC_ERR_SAME_IMAGE' },
        { type: 'ERROR', code: 'PC_ERR_PEER', message: 'm' },
        { type: 'CONFIRM' },
      ).map((msg): SourceEvent => ({ type: 'peer', msg })),
    );
    fc.assert(
      fc.property(fc.array(anyEvent, { maxLength: 30 }), (events) => {
        let s = initialState();
        for (const e of events) {
          const out = step(CFG, s, e, 0);
          expect(Array.isArray(out.effects)).toBe(true);
          s = out.state;
          expect(typeof publicPhase(s)).toBe('string');
        }
      }),
      fcParams(SEQUENCES),
    );
  });
});
