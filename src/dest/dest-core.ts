// D's session core: step(state, event, now) -> { state, effects }. Pure: no sockets, timers, files or promises.
// Every sub-state is a phase of its own (dest-core-types.ts); an event a phase does not expect goes down one
// failure path (dest-core-paths.ts `illegal`), so nothing here throws and nothing re-checks a phase after an await.
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../protocol/constants.js';
import { isValidBlockSize } from '../protocol/geometry.js';
import type { Message, MessageOf } from '../protocol/messages.js';
import { MAX_IMAGE_BYTES } from './constants.js';
import type { DestContext, DestEffect, DestEvent, DestState, Digests, Failure, Restart, ShownPhase, StepResult } from './dest-core-types.js';
import { blockCountOf, finishRollbackIfDone, goLive, illegal, linkLost, persist, rollBack, sendComplete } from './dest-core-paths.js';

export function initialState(stateDirCreated: boolean): DestState {
  return {
    phase: 'listening',
    ctx: { keys: null, geometry: null, created: { image: null, bitmap: false }, stateDirCreated, guest: false, link: 'down', saved: 'idle', resumes: 0, finishMs: null },
  };
}

const unexpected = (what: string, state: DestState): Failure => ({ code: 'PC_ERR_UNEXPECTED', message: `${what} in phase ${state.ctx.saved}` });
const keep = (state: DestState, effects: DestEffect[] = []): StepResult => ({ state, effects });

export function step(state: DestState, event: DestEvent, now: number): StepResult {
  switch (event.type) {
    case 'peer':
      return onPeer(state, event.msg, now);
    case 'peer-violation':
      return illegal(state, event.error);
    case 'link-up':
      return onLinkUp(state, event.keys, event.resumed);
    case 'link-down':
      return state.ctx.link === 'down' ? keep(state) : linkLost(state, event.error, []);
    case 'restarted':
      return state.phase === 'listening' && state.ctx.keys === null ? restarted(state.ctx, event.restart) : keep(state);
    case 'stop':
      return state.phase === 'done' ? keep(state) : { state: { phase: 'done', ctx: state.ctx, outcome: { kind: 'stopped' } }, effects: [{ type: 'cancel-timer', name: 'abort-grace' }, { type: 'cancel-timer', name: 'confirm-grace' }] };
    default:
      return onAdapter(state, event, now);
  }
}

function onLinkUp(state: DestState, keys: NonNullable<DestContext['keys']>, resumed: boolean): StepResult {
  const ctx: DestContext = { ...state.ctx, keys, link: 'up', resumes: state.ctx.resumes + (resumed ? 1 : 0) };
  const effects: DestEffect[] = [{ type: 'away-stop' }, { type: 'attach-fetches' }, { type: 'emit', event: 'link', fields: { state: 'up', resumed, phase: ctx.saved } }];
  switch (state.phase) {
    case 'awaiting-confirm':
      return keep({ ...state, ctx }, [...effects, ...sendComplete(state.digests, blockCountOf(ctx))]);
    case 'rolling-back':
      // S has learned the outcome from WELCOME; nothing more to say.
      return finishRollbackIfDone({ ...state, ctx, graceOver: true }, [...effects, { type: 'close-link' }, { type: 'cancel-timer', name: 'abort-grace' }]);
    case 'done':
      return keep({ ...state, ctx }, [{ type: 'close-link' }]);
    default:
      return keep({ ...state, ctx }, [...effects, { type: 'fill-stream' }]);
  }
}

function onPeer(state: DestState, msg: Message, now: number): StepResult {
  // A rolled-back or finished session has nothing to say to S any more.
  if (state.phase === 'rolling-back' || state.phase === 'done') return keep(state);
  switch (msg.type) {
    case 'RAM_ROUND_END':
      return keep(state, [{ type: 'emit', event: 'ram-round', fields: { round: msg.round, pages: msg.pagesSent, dirtyRemaining: msg.dirtyRemaining } }]);
    case 'ERROR':
      return keep(state, [{ type: 'log', level: 'error', msg: 'source reported an error', fields: { code: msg.code, message: msg.message } }]);
    case 'EXTENTS_END':
      return keep(state, [{ type: 'log', level: 'info', msg: 'zero map applied', fields: { zeroRuns: msg.count } }, { type: 'fill-stream' }]);
    case 'BEGIN':
      return state.phase === 'listening' ? begin(state, msg) : illegal(state, unexpected('BEGIN', state));
    case 'RAM_PAGES':
    case 'GUEST_STREAM':
      return state.phase === 'receiving' && state.ctx.guest ? keep(state, [{ type: 'guest-frame', msg }]) : illegal(state, unexpected(msg.type, state));
    case 'GUEST_STREAM_END':
      return (state.phase === 'receiving' || state.phase === 'finishing') && state.ctx.guest ? keep(state, [{ type: 'guest-frame', msg }]) : keep(state);
    case 'DEVICE_STATE':
      return state.phase === 'receiving' ? deviceState(state, msg, now) : illegal(state, unexpected('DEVICE_STATE', state));
    case 'EXTENTS':
      return state.phase === 'postcopy' || state.phase === 'final-check' || state.phase === 'invalidating' || state.phase === 'awaiting-confirm'
        ? keep(state, [{ type: 'apply-zero-runs', msg }])
        : illegal(state, unexpected('EXTENTS', state));
    case 'CONFIRM':
      return state.phase === 'awaiting-confirm' ? confirm(state) : illegal(state, unexpected('CONFIRM', state));
    case 'DIGEST_MISMATCH':
      return state.phase === 'awaiting-confirm' ? digestMismatch(state, msg.blocks) : illegal(state, unexpected('DIGEST_MISMATCH', state));
    case 'ABORT':
      if (afterCutover(state)) return illegal(state, { code: 'PC_ERR_UNEXPECTED', message: 'ABORT after cut-over: the guest runs here now' });
      return rollBack(state, { code: 'PC_ERR_ROLLBACK', message: `source aborted: ${msg.reason}` }, { tell: 'nothing', waitForSource: false });
    default:
      return illegal(state, { code: 'PC_ERR_UNEXPECTED', message: `${msg.type} is not for the destination` });
  }
}

/** Cut-over is the persisted postcopy: from then on the guest may run here and S may have let go. */
function afterCutover(state: DestState): boolean {
  return state.ctx.saved === 'postcopy' || state.ctx.saved === 'complete' || state.ctx.saved === 'confirmed';
}

function begin(state: DestState, msg: MessageOf<'BEGIN'>): StepResult {
  const { size, blockSize } = msg;
  if (size <= 0 || size > MAX_IMAGE_BYTES) return illegal(state, { code: 'PC_ERR_MALFORMED', message: `image size ${size}` });
  if (!isValidBlockSize(blockSize)) {
    return illegal(state, { code: 'PC_ERR_MALFORMED', message: `block size ${blockSize} must be a power of two in ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}` });
  }
  const ctx: DestContext = { ...state.ctx, geometry: { size, blockSize }, guest: msg.guest !== null };
  return keep({ phase: 'preparing', ctx, step: 'store', def: msg.guest, cookie: msg.cookie }, [{ type: 'prepare-store', size, blockSize, begin: msg }]);
}

function deviceState(state: Extract<DestState, { phase: 'receiving' }>, msg: MessageOf<'DEVICE_STATE'>, now: number): StepResult {
  const finishing = { phase: 'finishing' as const, ctx: state.ctx, step: 'load' as const, startedAt: now };
  return state.ctx.guest ? keep(finishing, [{ type: 'load-guest', final: msg }]) : loaded(finishing, now);
}

/** The guest has all its state (or there is none): durable postcopy first, so a restart knows it may run here. */
function loaded(state: Extract<DestState, { phase: 'finishing' }>, now: number): StepResult {
  const p = persist(state.ctx, 'postcopy');
  const next = { ...state, ctx: p.ctx, step: 'start' as const };
  const effects: DestEffect[] = [...p.effects, { type: 'start-copy-on-read' }];
  return keep(next, [...effects, { type: 'start-guest' }]);
}

function confirm(state: Extract<DestState, { phase: 'awaiting-confirm' }>): StepResult {
  // Everything is durable and S has let go: a state dir that cannot record it is logged, and D finishes anyway
  // (a restart would find complete, wait out the confirm grace, and finish too).
  return {
    state: { phase: 'done', ctx: { ...state.ctx, saved: 'confirmed' }, outcome: { kind: 'confirmed' } },
    effects: [
      { type: 'persist', phase: 'confirmed', bestEffort: true },
      { type: 'emit', event: 'phase', fields: { phase: 'confirmed' } },
      { type: 'away-stop' },
      { type: 'cancel-timer', name: 'confirm-grace' },
      { type: 'emit', event: 'complete', fields: {}, progress: true },
      { type: 'close-link' },
      { type: 'finish', outcome: { kind: 'confirmed' } },
    ],
  };
}

function onAdapter(state: DestState, event: Exclude<DestEvent, { type: 'peer' | 'peer-violation' | 'link-up' | 'link-down' | 'restarted' | 'stop' }>, now: number): StepResult {
  switch (state.phase) {
    case 'preparing':
      return preparing(state, event);
    case 'receiving':
      if (event.type === 'guest-load-failed') return rollBack(state, event.error, { tell: 'ABORT', waitForSource: false });
      if (event.type === 'local-fault') return rollBack(state, event.error, { tell: 'ABORT', waitForSource: false });
      return keep(state);
    case 'finishing':
      return finishing(state, event, now);
    case 'postcopy':
      if (event.type === 'store-complete') return keep({ phase: 'final-check', ctx: state.ctx }, [{ type: 'stop-stream' }, { type: 'compute-digests' }]);
      return event.type === 'local-fault' ? persistFailedAfterCutover(state, event.error) : keep(state);
    case 'final-check':
      if (event.type === 'digests-ready') return digestsReady(state, event.digests);
      return event.type === 'local-fault' ? persistFailedAfterCutover(state, event.error) : keep(state);
    case 'invalidating':
      if (event.type === 'invalidated') return invalidated(state, event.again);
      if (event.type !== 'local-fault') return keep(state);
      // The invalidation will not report (its batch stopped before it, or it failed itself): as any fault after cut-over.
      if (event.from === 'invalidate' || event.skipped?.includes('invalidate')) return persistFailedAfterCutover(state, event.error);
      // Another fault while it runs: said, and the phase waits for it. Going back to postcopy now would let a
      // completion seen before the invalidation stand for the image's: COMPLETE with blocks missing.
      return keep(state, [
        { type: 'log', level: 'error', msg: 'a local fault while blocks are invalidated; waiting for the invalidation', fields: { code: event.error.code, error: event.error.message } },
        { type: 'emit', event: 'error', fields: { code: event.error.code, message: event.error.message } },
      ]);
    case 'awaiting-confirm':
      if (event.type === 'timer' && event.name === 'confirm-grace') {
        if (state.ctx.link === 'up') return keep({ ...state, confirmGraceArmed: false });
        return {
          state: { phase: 'done', ctx: state.ctx, outcome: { kind: 'unconfirmed' } },
          effects: [
            { type: 'log', level: 'warn', msg: 'complete, but the source did not confirm before the link was lost; finishing anyway' },
            { type: 'emit', event: 'complete', fields: { confirmed: false }, progress: true },
            { type: 'finish', outcome: { kind: 'unconfirmed' } },
          ],
        };
      }
      return event.type === 'local-fault' ? persistFailedAfterCutover(state, event.error) : keep(state);
    case 'rolling-back':
      if (event.type === 'discarded') return finishRollbackIfDone({ ...state, discarding: state.discarding - 1 }, []);
      if (event.type === 'store-prepared' && (event.created.image || event.created.bitmap)) {
        // Files made by a Prepare that finished after the rollback began: theirs to undo too.
        const ctx = { ...state.ctx, created: event.created };
        return keep({ ...state, ctx, discarding: state.discarding + 1 }, [{ type: 'discard-created', created: event.created }]);
      }
      if (event.type === 'timer' && event.name === 'abort-grace') return finishRollbackIfDone({ ...state, graceOver: true }, []);
      return keep(state);
    default:
      // Results of work a phase that is over started (a late store-complete, a timer of the past): nothing to do.
      return keep(state);
  }
}

function preparing(state: Extract<DestState, { phase: 'preparing' }>, event: DestEvent): StepResult {
  if (event.type === 'local-fault' || event.type === 'guest-load-failed') return rollBack(state, event.error, { tell: 'ABORT', waitForSource: false });
  const result = event.type === 'store-prepared' || event.type === 'export-started' || event.type === 'guest-prepared' ? event.result : null;
  if (!result) return keep(state);
  const ctx = event.type === 'store-prepared' ? { ...state.ctx, created: event.created } : state.ctx;
  if (!result.ok) return rollBack({ ...state, ctx }, result.error, { tell: result.error.usage ? 'refuse' : 'ABORT', waitForSource: false });
  if (event.type === 'store-prepared') {
    const first = persist(ctx, 'idle', true);
    const second = persist(first.ctx, 'prepared');
    return keep({ ...state, ctx: second.ctx, step: 'export' }, [first.effects[0]!, ...second.effects, { type: 'attach-fetches' }, { type: 'start-export', restart: false }]);
  }
  if (event.type === 'export-started' && state.def) return keep({ ...state, step: 'guest' }, [{ type: 'prepare-guest', def: state.def }]);
  const effects: DestEffect[] = [
    { type: 'send', msg: { type: 'PREPARED', cookie: state.cookie } },
    { type: 'log', level: 'info', msg: 'prepared', fields: { ...ctx.geometry, blockCount: blockCountOf(ctx), guest: ctx.guest } },
  ];
  if (!ctx.guest) return keep({ phase: 'receiving', ctx }, effects);
  const p = persist(ctx, 'receiving-ram');
  return keep({ phase: 'receiving', ctx: p.ctx }, [...effects, ...p.effects, { type: 'open-guest' }]);
}

function finishing(state: Extract<DestState, { phase: 'finishing' }>, event: DestEvent, now: number): StepResult {
  if (event.type === 'guest-loaded' && state.step === 'load') {
    return event.result.ok ? loaded(state, now) : rollBack(state, event.result.error, { tell: 'FINISH_RESULT', waitForSource: false });
  }
  if (event.type === 'guest-started' && state.step === 'start') {
    return event.result.ok ? goLive(state, now) : rollBack(state, event.result.error, { tell: 'FINISH_RESULT', waitForSource: false });
  }
  // The only persist here is postcopy's, before the guest starts: it failed, so nothing runs here; S resumes.
  if (event.type === 'local-fault') return rollBack(state, event.error, { tell: 'FINISH_RESULT', waitForSource: false });
  return keep(state);
}

function digestsReady(state: Extract<DestState, { phase: 'final-check' }>, digests: Digests): StepResult {
  const p = state.ctx.saved === 'complete' ? { ctx: state.ctx, effects: [] as DestEffect[] } : persist(state.ctx, 'complete');
  const effects: DestEffect[] = [...p.effects, { type: 'log', level: 'info', msg: 'every block present and durable', fields: { checkedBlocks: digests.blocks.length } }];
  const up = p.ctx.link === 'up';
  if (up) effects.push(...sendComplete(digests, blockCountOf(p.ctx)));
  else effects.push({ type: 'arm-timer', name: 'confirm-grace' });
  return keep({ phase: 'awaiting-confirm', ctx: p.ctx, digests, confirmGraceArmed: !up }, effects);
}

/** S's image differs in these blocks: no longer complete (durably, before any bit is cleared), then fetch them again. */
function digestMismatch(state: Extract<DestState, { phase: 'awaiting-confirm' }>, blocks: number[]): StepResult {
  const p = persist(state.ctx, 'postcopy');
  return keep({ phase: 'invalidating', ctx: p.ctx }, [
    { type: 'log', level: 'error', msg: 'final check: blocks differ from the source; fetching them again', fields: { blocks: blocks.slice(0, 16), count: blocks.length } },
    { type: 'emit', event: 'digest-mismatch', fields: { blocks: blocks.length } },
    ...p.effects,
    { type: 'invalidate', blocks },
  ]);
}

/** A mismatch that invalidated nothing (the guest rewrote those blocks) goes straight back to the final check, once. */
function invalidated(state: Extract<DestState, { phase: 'invalidating' }>, again: number): StepResult {
  if (again === 0) return keep({ phase: 'final-check', ctx: state.ctx }, [{ type: 'compute-digests' }]);
  return keep({ phase: 'postcopy', ctx: state.ctx }, [{ type: 'start-stream' }, { type: 'watch-complete' }]);
}

/** After cut-over a state dir that cannot be written is said plainly; the guest keeps running, nothing is undone. */
function persistFailedAfterCutover(state: DestState, error: Failure): StepResult {
  return keep({ phase: 'postcopy', ctx: { ...state.ctx, saved: 'postcopy' } }, [
    { type: 'log', level: 'error', msg: 'could not record the phase in the state dir; the guest keeps running here, COMPLETE waits', fields: { code: error.code, error: error.message } },
    { type: 'emit', event: 'error', fields: { code: error.code, message: error.message } },
    { type: 'start-stream' },
    { type: 'watch-complete' },
  ]);
}

function restarted(base: DestContext, r: Restart): StepResult {
  const ctx: DestContext = { ...base, keys: r.keys, geometry: r.geometry, created: { image: r.image, bitmap: r.kind === 'rollback' }, stateDirCreated: r.stateDirCreated, saved: r.phase };
  if (r.kind === 'rollback') {
    // Crashed before cut-over: the source kept (or resumes) the guest. Undo what this session did, but let S learn it.
    const error: Failure = { code: 'PC_ERR_ROLLBACK', message: `restarted in phase ${r.phase} before cut-over` };
    return keep({ phase: 'rolling-back', ctx: { ...ctx, saved: 'aborted' }, error, discarding: 1, graceOver: false }, [
      { type: 'discard-created', created: ctx.created },
      { type: 'arm-timer', name: 'abort-grace' },
    ]);
  }
  const effects: DestEffect[] = [
    { type: 'start-copy-on-read' },
    { type: 'start-export', restart: true },
    { type: 'log', level: 'warn', msg: 'restarted: reloaded image and bitmap; waiting for the source to reconnect', fields: { phase: r.phase } },
    { type: 'emit', event: 'phase', fields: { phase: r.phase, restarted: true }, progress: true },
  ];
  // Complete on record: the final check runs again once the store says so too (it is, unless a crash came mid-way).
  if (r.phase === 'complete') return keep({ phase: 'postcopy', ctx }, [...effects, { type: 'start-stream' }, { type: 'watch-complete' }]);
  // S is not here yet: the fallback's wait and the reports start now, as after a lost link.
  return keep({ phase: 'postcopy', ctx }, [...effects, { type: 'start-stream' }, { type: 'watch-complete' }, { type: 'source-gone' }, { type: 'away-start' }]);
}

/** The phase S's handshake and the operator see. */
export function shownPhase(state: DestState): ShownPhase {
  if (state.phase === 'finishing') return 'finishing';
  return state.ctx.saved;
}
