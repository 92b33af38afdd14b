// The paths of D's session core that several phases share: the one failure path for an illegal
// (phase, event) pair, rollback (before cut-over only), going live, the final check and the end.
import { MAX_DIGESTS_PER_FRAME } from '../protocol/constants.js';
import type { DestContext, DestEffect, DestState, Digests, Failure, StepResult } from './dest-core-types.js';

export type Tell = 'ABORT' | 'FINISH_RESULT' | 'refuse' | 'nothing';

/** Persist a phase, then say so: the effects after it may rely on it being durable. */
export function persist(ctx: DestContext, phase: DestContext['saved'], syncDir = false): { ctx: DestContext; effects: DestEffect[] } {
  return {
    ctx: { ...ctx, saved: phase },
    effects: [{ type: 'persist', phase, ...(syncDir ? { syncDir } : {}) }, { type: 'emit', event: 'phase', fields: { phase } }],
  };
}

/** Before cut-over: undo what this session created (only that), telling S first when the link allows. */
export function rollBack(state: DestState, error: Failure, o: { tell: Tell; waitForSource: boolean }, before: DestEffect[] = []): StepResult {
  const ctx = state.ctx;
  const effects: DestEffect[] = [...before];
  if (o.tell === 'refuse') {
    effects.push({ type: 'log', level: 'error', msg: 'refused the migration', fields: { code: error.code, error: error.message } });
    effects.push({ type: 'send', msg: { type: 'ABORT', reason: error.detail ?? error.message, code: error.code } });
  } else if (o.tell === 'ABORT') {
    effects.push({ type: 'send', msg: { type: 'ABORT', reason: error.message } });
  } else if (o.tell === 'FINISH_RESULT') {
    effects.push({ type: 'log', level: 'error', msg: 'finish failed; guest not resumed here', fields: { code: error.code, error: error.message } });
    effects.push({ type: 'send', msg: { type: 'FINISH_RESULT', running: false, error: error.message } });
  }
  effects.push({ type: 'log', level: 'warn', msg: 'rolling back: discarding what this migration created here', fields: { code: error.code, error: error.message } });
  if (ctx.guest) effects.push({ type: 'abort-guest' });
  effects.push({ type: 'fail-fetches', error }, { type: 'stop-stream' });
  // A state dir that cannot be written must not stop the rollback: a restart finds an earlier phase, before cut-over too.
  // Except postcopy, recorded before a guest start that then failed: a restart would resume a session whose guest never
  // ran here (and S would finish, the guest lost). That record is removed instead when the aborted one cannot be written.
  if (ctx.keys && ctx.geometry) effects.push({ type: 'persist', phase: 'aborted', bestEffort: true, ...(ctx.saved === 'postcopy' ? { forgetOnFailure: true } : {}) });
  effects.push({ type: 'emit', event: 'phase', fields: { phase: 'aborted', error: error.message, code: error.code } });
  // The export serves the image about to go: stopped first (D owns it).
  effects.push({ type: 'stop-export' }, { type: 'discard-created', created: ctx.created });
  if (o.tell === 'refuse') effects.push({ type: 'close-link' });
  // Once S may have sent its final state it stays paused until it hears D's answer, and an answer in flight is lost
  // with the link: D then waits the abort grace for S to reconnect and learn it. During Prepare S has sent nothing
  // final and rolls back by itself when the link goes.
  const sMayBePaused = o.tell === 'FINISH_RESULT' || (o.tell === 'ABORT' && state.phase !== 'preparing');
  const wait = (o.waitForSource || sMayBePaused) && ctx.keys !== null;
  if (wait) effects.push({ type: 'arm-timer', name: 'abort-grace' });
  return { state: { phase: 'rolling-back', ctx: { ...ctx, saved: 'aborted' }, error, discarding: 1, graceOver: !wait }, effects };
}

/** Report the rollback only once it is true: what this session created is gone and S had its chance to learn it. */
export function finishRollbackIfDone(state: Extract<DestState, { phase: 'rolling-back' }>, effects: DestEffect[]): StepResult {
  if (state.discarding > 0 || !state.graceOver) return { state, effects };
  return {
    state: { phase: 'done', ctx: state.ctx, outcome: { kind: 'rolled-back', error: state.error } },
    effects: [...effects, { type: 'remove-session-files' }, { type: 'finish', outcome: { kind: 'rolled-back', error: state.error } }],
  };
}

/** What losing the link means in each phase: before cut-over a rollback (S may still learn it), after it a wait. */
export function linkLost(state: DestState, error: Failure, effects: DestEffect[]): StepResult {
  const ctx: DestContext = { ...state.ctx, link: 'down' };
  const lost: DestEffect = { type: 'emit', event: 'link', fields: { state: 'down', phase: ctx.saved, error: error.message } };
  const logged: DestEffect = { type: 'log', level: 'warn', msg: 'migration link lost', fields: { code: error.code, error: error.message, phase: ctx.saved } };
  switch (state.phase) {
    case 'listening':
    case 'preparing':
    case 'receiving':
      return rollBack({ ...state, ctx }, error, { tell: 'nothing', waitForSource: true }, [...effects, logged, lost]);
    case 'finishing':
      // Once postcopy is persisted the guest may be starting here: from then on a lost link is waited out.
      if (ctx.saved !== 'postcopy') return rollBack({ ...state, ctx }, error, { tell: 'nothing', waitForSource: true }, [...effects, logged, lost]);
      return { state: { ...state, ctx }, effects: [...effects, logged, lost, { type: 'away-start' }] };
    case 'postcopy':
    case 'final-check':
    case 'invalidating':
      return { state: { ...state, ctx }, effects: [...effects, logged, lost, { type: 'away-start' }] };
    case 'awaiting-confirm':
      return {
        state: { ...state, ctx, confirmGraceArmed: true },
        effects: [...effects, logged, lost, ...(state.confirmGraceArmed ? [] : [{ type: 'arm-timer', name: 'confirm-grace' } as DestEffect])],
      };
    case 'rolling-back':
    case 'done':
      return { state: { ...state, ctx }, effects };
  }
}

/** The one failure path of an illegal (phase, event) pair: log, an error frame to S, then the phase's link-loss transition. */
export function illegal(state: DestState, error: Failure): StepResult {
  const effects: DestEffect[] = [{ type: 'log', level: 'error', msg: 'refusing a message S should not send now', fields: { code: error.code, error: error.message, phase: state.phase } }];
  if (state.ctx.link === 'down') return { state, effects, illegal: error };
  effects.push({ type: 'close-link', error });
  return { ...linkLost(state, error, effects), illegal: error };
}

/** The guest runs here: tell S, then pull the rest of the disk. */
export function goLive(state: Extract<DestState, { phase: 'finishing' }>, now: number): StepResult {
  const finishMs = now - state.startedAt;
  const ctx = { ...state.ctx, finishMs };
  return {
    state: { phase: 'postcopy', ctx },
    effects: [
      { type: 'send', msg: { type: 'FINISH_RESULT', running: true } },
      { type: 'log', level: 'info', msg: 'guest running on destination; post-copy started', fields: { finishMs } },
      { type: 'emit', event: 'cutover', fields: { finishMs } },
      { type: 'start-stream' },
      { type: 'watch-complete' },
    ],
  };
}

/** The digests S checks, in frames of at most MAX_DIGESTS_PER_FRAME, then COMPLETE. */
export function sendComplete(digests: Digests, blockCount: number): DestEffect[] {
  const effects: DestEffect[] = [];
  const { blocks, crcs } = digests;
  for (let i = 0; i < blocks.length; i += MAX_DIGESTS_PER_FRAME) {
    const n = Math.min(MAX_DIGESTS_PER_FRAME, blocks.length - i);
    effects.push({ type: 'send', msg: { type: 'BLOCK_DIGESTS', entries: Array.from({ length: n }, (_, k): [number, number] => [blocks[i + k]!, crcs[i + k]!]) } });
  }
  effects.push({ type: 'send', msg: { type: 'COMPLETE', blocks: blockCount, pristineBlocks: blocks.length } });
  return effects;
}

export function blockCountOf(ctx: DestContext): number {
  return ctx.geometry ? Math.ceil(ctx.geometry.size / ctx.geometry.blockSize) : 0;
}
