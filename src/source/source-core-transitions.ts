// S's session core, the transitions every handler shares: entering a phase, cut-over, post-copy, a lost link,
// rollback, failure after cut-over, and the one path for an illegal (phase, event) pair.
import { LinkClosedError, RolledBackError, UsageError, errorFor, type PostcopyError } from '../common/errors.js';
import type { Context, DigestTally, SessionKeys, SourceConfig, SourceEffect, SourcePhase, SourceState, Step } from './source-core-types.js';

export const initialState = (): SourceState => ({ phase: 'idle', ctx: { gen: 0, reconnects: 0, precopy: null, scan: 'idle' } });
export const newTally = (): DigestTally => ({ received: 0, bad: [], unknown: [] });

/** The phase S reports for a core state. */
export function publicPhase(s: SourceState): SourcePhase {
  switch (s.phase) {
    case 'idle':
    case 'connecting':
      return 'connecting';
    case 'awaiting-prepared':
      return 'begin';
    case 'precopy':
      return 'perform';
    case 'awaiting-finish':
    case 'postcopy':
      return s.phase;
    case 'done':
      return 'confirmed';
    case 'rolled-back':
      return 'rolled-back';
    case 'failed':
      return s.was;
  }
}

/** Before cut-over a stop request rolls back (the guest stays here); after it, it is refused. */
export function acceptsAbort(s: SourceState): boolean {
  return s.phase === 'idle' || s.phase === 'connecting' || s.phase === 'awaiting-prepared' || s.phase === 'precopy';
}

/** D's image matches ours after its COMPLETE: confirm, forget the session, release the image, stop the guest. */
export function confirm(s: Extract<SourceState, { phase: 'postcopy' }>): Step {
  return {
    state: { phase: 'done', keys: s.keys, downtimeMs: s.downtimeMs, ctx: s.ctx },
    effects: [
      { type: 'send', msg: { type: 'CONFIRM' } },
      emitPhase('confirmed'),
      { type: 'remove-state' },
      { type: 'report-complete' },
      { type: 'close-link' },
      { type: 'close-image' },
      { type: 'shutdown-guest' },
      { type: 'finish', sessionId: s.keys.sessionId, precopy: s.ctx.precopy, downtimeMs: s.downtimeMs, reconnects: s.ctx.reconnects },
    ],
  };
}

/** The link went down: before cut-over that rolls back; after it, reconnect and ask D. */
export function onLinkDown(cfg: SourceConfig, s: SourceState, error: PostcopyError, now: number): Step {
  if (s.phase === 'awaiting-prepared' || s.phase === 'precopy') return rollback(s, error);
  if (s.phase === 'awaiting-finish' || s.phase === 'postcopy') return linkLost(cfg, s, now);
  return ignore(s, 'link-down');
}

export function linkLost(cfg: SourceConfig, s: Extract<SourceState, { phase: 'awaiting-finish' | 'postcopy' }>, now: number): Step {
  const deadline = now + cfg.resumeTimeoutMs;
  return {
    state: { ...s, link: 'down', attempt: 0, deadline },
    effects: [{ type: 'warn-link-lost' }, { type: 'emit', name: 'link', data: { state: 'reconnecting', attempt: 0 } }, { type: 'connect', resume: s.keys, deadline }],
  };
}

/** The guest is paused here with all its RAM sent: persist, then the final state. From now on S never guesses. */
export function cutOver(s: Extract<SourceState, { phase: 'precopy' }>, final: { precopy: SourceState['ctx']['precopy']; state: Record<string, unknown>; ramDigest: string }, now: number): Step {
  const ctx = { ...s.ctx, precopy: final.precopy };
  return {
    state: { phase: 'awaiting-finish', keys: s.keys, pausedAt: final.precopy?.pausedAtEpochMs ?? now, link: 'up', ctx },
    effects: [{ type: 'clear-read-cache' }, ...enter('awaiting-finish', s.keys), { type: 'send-device-state', state: final.state, ramDigest: final.ramDigest }],
  };
}

export function enterPostcopy(s: Extract<SourceState, { phase: 'awaiting-finish' }> & { link: 'up' }, downtimeMs: number | null): Step {
  return {
    state: { phase: 'postcopy', keys: s.keys, downtimeMs, tally: newTally(), checking: false, link: 'up', ctx: s.ctx },
    effects: [
      ...enter('postcopy', s.keys),
      { type: 'make-read-only' },
      { type: 'emit', name: 'cutover', data: { downtimeMs } },
      { type: 'log', level: 'info', msg: 'guest running on destination; serving blocks', data: { downtimeMs } },
      ...extents(s.ctx),
    ],
  };
}

/** Zero runs found so far go on the current link; the scan starts once (the image no longer changes). */
export function extents(ctx: Context): SourceEffect[] {
  if (ctx.scan === 'idle') return [{ type: 'send-extents', end: false }, { type: 'start-extent-scan' }];
  return [{ type: 'send-extents', end: ctx.scan === 'done' }];
}

export function onClose(s: SourceState): Step {
  if (s.phase === 'awaiting-finish' || s.phase === 'postcopy') {
    return fail(s, new LinkClosedError('PC_ERR_LINK_CLOSED', 'source stopped'));
  }
  if (acceptsAbort(s)) return rollback(s, new LinkClosedError('PC_ERR_LINK_CLOSED', 'source stopped'));
  return ignore(s, 'close');
}

/** Before cut-over: tell D, run the guest here again, forget the session. */
export function rollback(s: SourceState, err: PostcopyError): Step {
  const effects: SourceEffect[] = [
    // An operator mistake the destination found (its image is ours) is said in the command's one line.
    err instanceof UsageError
      ? { type: 'log', level: 'warn', msg: 'the destination refused the migration; guest stays on source', data: { code: err.code, message: err.message } }
      : { type: 'log', level: 'error', msg: 'migration failed before cut-over; rolling back, guest stays on source', err },
    { type: 'cancel-timer', name: 'prepared' },
    { type: 'cancel-timer', name: 'reconnect' },
  ];
  if (linkIsUp(s)) effects.push({ type: 'send', msg: { type: 'ABORT', reason: err.message } }, { type: 'close-link' });
  if (s.phase === 'precopy') effects.push({ type: 'stop-precopy', error: new RolledBackError('PC_ERR_ROLLBACK', err.message) });
  effects.push(
    { type: 'resume-guest', migrationStarted: s.phase !== 'idle' && s.phase !== 'connecting' },
    { type: 'remove-state' },
    { type: 'emit', name: 'phase', data: { phase: 'rolled-back', error: err.message, code: err.code } },
    { type: 'rollback', error: err, precopy: s.ctx.precopy },
  );
  return { state: { phase: 'rolled-back', failedIn: publicPhase(s), ctx: s.ctx }, effects };
}

/** After cut-over S cannot go on (gave up reaching D, refused, stopped): it keeps its state for a restart. */
export function fail(s: SourceState, err: PostcopyError): Step {
  return {
    state: { phase: 'failed', was: publicPhase(s), ctx: s.ctx },
    effects: [{ type: 'cancel-timer', name: 'reconnect' }, ...(linkIsUp(s) ? [{ type: 'close-link' } as const] : []), { type: 'fail', error: err }],
  };
}

/**
 * The one failure path for a peer message the phase does not allow: log it, tell the peer (the link closes with
 * the error, which sends an ERROR frame), then the phase's own link-loss transition.
 */
export function illegal(cfg: SourceConfig, s: SourceState, detail: string, now: number, code: 'PC_ERR_UNEXPECTED' | 'PC_ERR_MALFORMED' | 'PC_ERR_OUT_OF_RANGE' = 'PC_ERR_UNEXPECTED'): Step {
  const err = errorFor(code, detail);
  const told: SourceEffect[] = [{ type: 'log', level: 'warn', msg: 'message not valid here; closing the link', data: { phase: publicPhase(s), code, detail } }];
  if (!linkIsUp(s)) return { state: s, effects: told };
  told.push({ type: 'close-link', error: err });
  return withFirst(told, onLinkDown(cfg, s, err, now));
}

export function linkIsUp(s: SourceState): boolean {
  if (s.phase === 'awaiting-prepared' || s.phase === 'precopy') return true;
  return (s.phase === 'awaiting-finish' || s.phase === 'postcopy') && s.link === 'up';
}

/** A phase change: persisted before anything is sent in it (a restart must find it), then announced. */
export function enter(phase: SourcePhase, keys: SessionKeys): SourceEffect[] {
  return [{ type: 'persist', keys, phase }, emitPhase(phase)];
}

export const emitPhase = (phase: SourcePhase): SourceEffect => ({ type: 'emit', name: 'phase', data: { phase } });

export function ignore(s: SourceState, what: string): Step {
  return { state: s, effects: [{ type: 'log', level: 'debug', msg: 'stale event ignored', data: { phase: s.phase, event: what } }] };
}

export function withFirst(first: SourceEffect | SourceEffect[], next: Step): Step {
  return { state: next.state, effects: [...(Array.isArray(first) ? first : [first]), ...next.effects] };
}

