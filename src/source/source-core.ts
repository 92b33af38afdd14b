// S's session core: step(config, state, event, now) → next state and the effects the shell must run, in order.
// Pure: no sockets, timers, files or promises. After the final state is sent S never guesses: a lost link means
// reconnect (one attempt per `connect` effect, the backoff between them armed here) and ask D.
import { LinkClosedError, RolledBackError, TimeoutError } from '../common/errors.js';
import { backoffDelay } from '../common/retry.js';
import { MAX_MISMATCH_BLOCKS } from '../protocol/constants.js';
import { abortError, isAuthFailure, isDestBusy, peerPhaseMeans } from './source-core-rules.js';
import {
  acceptsAbort, confirm, cutOver, emitPhase, onClose, enter, enterPostcopy, extents, fail, ignore, illegal, linkIsUp, linkLost, newTally, onLinkDown, publicPhase, rollback, withFirst,
} from './source-core-transitions.js';
import type { Context, SessionKeys, SourceConfig, SourceEffect, SourceEvent, SourceState, Step } from './source-core-types.js';

export type * from './source-core-types.js';
export { acceptsAbort, initialState, publicPhase } from './source-core-transitions.js';

export function step(cfg: SourceConfig, s: SourceState, e: SourceEvent, now: number): Step {
  switch (e.type) {
    case 'start':
      if (s.phase !== 'idle') return ignore(s, e.type);
      return {
        state: { phase: 'connecting', attempt: 0, deadline: now + cfg.connectTimeoutMs, ctx: s.ctx },
        effects: [{ type: 'start-guest' }, emitPhase('connecting'), { type: 'connect', resume: null, deadline: now + cfg.connectTimeoutMs }],
      };
    case 'restarted': {
      if (s.phase !== 'idle') return ignore(s, e.type);
      const keys = { sessionId: e.saved.sessionId, resumeKey: e.saved.resumeKey };
      const lost = { link: 'up' as const };
      const base: SourceState =
        e.saved.phase === 'postcopy'
          ? { phase: 'postcopy', keys, downtimeMs: null, tally: newTally(), checking: false, ...lost, ctx: s.ctx }
          : { phase: 'awaiting-finish', keys, pausedAt: null, ...lost, ctx: s.ctx };
      const next = linkLost(cfg, base, now);
      return {
        state: next.state,
        effects: [
          { type: 'make-read-only' },
          { type: 'log', level: 'info', msg: 'restarted after cut-over; resuming session', data: { sessionId: keys.sessionId, phase: e.saved.phase } },
          { type: 'emit', name: 'phase', data: { phase: e.saved.phase, restarted: true } },
          ...next.effects,
        ],
      };
    }
    case 'abort':
      if (!acceptsAbort(s)) return { state: s, effects: [{ type: 'log', level: 'warn', msg: 'stop refused after cut-over', data: { phase: publicPhase(s) } }] };
      return rollback(s, new RolledBackError('PC_ERR_ROLLBACK', e.reason));
    case 'close':
      return onClose(s);
    case 'local-failure':
      // Our own I/O failed (the state file could not be written, say): before cut-over roll back, after it stop.
      // Persisting awaiting-finish comes before the final state is sent: if it failed, nothing was sent.
      if (acceptsAbort(s) || (s.phase === 'awaiting-finish' && e.effect === 'persist')) return rollback(s, e.error);
      if (s.phase === 'awaiting-finish' || s.phase === 'postcopy') return fail(s, e.error);
      return ignore(s, e.type);
    case 'connected':
      return onConnected(cfg, s, e);
    case 'connect-failed':
      return onConnectFailed(cfg, s, e, now);
    case 'link-down':
      if (e.gen !== s.ctx.gen || !linkIsUp(s)) return ignore(s, 'link-down (an older link)');
      return onLinkDown(cfg, s, e.error ?? new LinkClosedError('PC_ERR_LINK_CLOSED'), now);
    case 'timer':
      return onTimer(s, e.name);
    case 'precopy-done':
      if (s.phase !== 'precopy') return ignore(s, e.type);
      return cutOver(s, e.final, now);
    case 'precopy-failed':
      if (s.phase !== 'precopy') return ignore(s, e.type);
      return rollback(s, e.error);
    case 'final-check-done':
    case 'final-check-failed':
      return onFinalCheck(s, e);
    case 'extents-done':
      return {
        state: { ...s, ctx: { ...s.ctx, scan: 'done' } } as SourceState,
        effects: linkIsUp(s) && s.phase === 'postcopy' ? [{ type: 'send-extents', end: true }] : [],
      };
    case 'extents-failed':
      return {
        state: { ...s, ctx: { ...s.ctx, scan: 'idle' } } as SourceState,
        effects: [{ type: 'log', level: 'warn', msg: 'extent map not complete; the destination fetches the rest and zero blocks come back as BLOCK_ZERO', err: e.error }],
      };
    case 'peer':
      return onPeer(cfg, s, e, now);
  }
}

function onPeer(cfg: SourceConfig, s: SourceState, e: Extract<SourceEvent, { type: 'peer' }>, now: number): Step {
  const msg = e.msg;
  // Messages come only on the current link; one the core has not taken (or has lost) has nothing to say.
  if (!linkIsUp(s)) return ignore(s, `${msg.type} with no current link`);
  switch (msg.type) {
    case 'ERROR':
      return { state: s, effects: [{ type: 'log', level: 'error', msg: 'destination reported an error', data: { code: msg.code, message: msg.message } }] };
    case 'PREPARED':
      if (s.phase === 'awaiting-prepared') {
        return {
          state: { phase: 'precopy', keys: s.keys, ctx: s.ctx },
          effects: [{ type: 'cancel-timer', name: 'prepared' }, ...enter('perform', s.keys), { type: 'start-precopy' }],
        };
      }
      // A PREPARED again (D repeats itself after a resume) changes nothing once we are past it.
      if (s.phase === 'precopy' || s.phase === 'awaiting-finish' || s.phase === 'postcopy') return ignore(s, 'PREPARED again');
      return illegal(cfg, s, `PREPARED in phase ${publicPhase(s)}`, now);
    case 'ABORT': {
      const log: SourceEffect = { type: 'log', level: 'warn', msg: 'destination aborted the migration', data: { reason: msg.reason } };
      if (s.phase === 'awaiting-prepared' || s.phase === 'precopy') return withFirst(log, rollback(s, abortError(msg)));
      if (s.phase === 'awaiting-finish') return withFirst(log, rollback(s, new RolledBackError('PC_ERR_ROLLBACK', `destination failed: ${msg.reason}`)));
      // After Finish D runs the guest: its ABORT cannot undo that; S goes on serving until COMPLETE.
      return { state: s, effects: [log] };
    }
    case 'FINISH_RESULT':
      if (s.phase === 'awaiting-finish' && s.link === 'up') {
        if (!msg.running) return rollback(s, new RolledBackError('PC_ERR_ROLLBACK', `destination failed: ${msg.error ?? 'unknown'}`));
        return enterPostcopy(s, s.pausedAt !== null ? now - s.pausedAt : null);
      }
      if (s.phase === 'postcopy') return ignore(s, 'FINISH_RESULT again');
      return illegal(cfg, s, `FINISH_RESULT in phase ${publicPhase(s)}`, now);
    case 'BLOCK_DIGESTS': {
      if (s.phase !== 'postcopy') return illegal(cfg, s, `BLOCK_DIGESTS in phase ${publicPhase(s)}`, now);
      if (s.tally.received + msg.entries.length > Math.ceil(cfg.size / cfg.blockSize)) return illegal(cfg, s, 'more block digests than blocks', now, 'PC_ERR_MALFORMED');
      const tally = { received: s.tally.received, bad: [...s.tally.bad], unknown: [...s.tally.unknown] };
      for (let i = 0; i < msg.entries.length; i++) {
        const [block, crc] = msg.entries[i]!;
        if (block * cfg.blockSize >= cfg.size) return illegal(cfg, s, `digest for block ${block}`, now, 'PC_ERR_OUT_OF_RANGE');
        const ours = e.sent?.[i];
        if (ours === undefined) tally.unknown.push([block, crc]);
        else if (ours !== crc) tally.bad.push(block);
      }
      tally.received += msg.entries.length;
      return { state: { ...s, tally }, effects: [] };
    }
    case 'COMPLETE':
      if (s.phase !== 'postcopy') return illegal(cfg, s, `COMPLETE in phase ${publicPhase(s)}`, now);
      if (msg.pristineBlocks !== s.tally.received) {
        return illegal(cfg, s, `COMPLETE names ${msg.pristineBlocks} digests, ${s.tally.received} arrived`, now, 'PC_ERR_MALFORMED');
      }
      return { state: { ...s, tally: newTally(), checking: true }, effects: [{ type: 'final-check', gen: s.ctx.gen, tally: s.tally }] };
    default:
      return illegal(cfg, s, `${msg.type} is not for the source`, now);
  }
}

function onConnected(cfg: SourceConfig, s: SourceState, e: Extract<SourceEvent, { type: 'connected' }>): Step {
  const keys: SessionKeys = { sessionId: e.sessionId, resumeKey: e.resumeKey };
  const ctx: Context = { ...s.ctx, gen: s.ctx.gen + 1 };
  if (s.phase === 'connecting') {
    return {
      state: { phase: 'awaiting-prepared', keys, ctx },
      effects: [
        { type: 'log', level: 'info', msg: 'connected and authenticated', data: { sessionId: e.sessionId, version: e.version } },
        ...enter('begin', keys),
        { type: 'send-begin' },
        { type: 'arm-timer', name: 'prepared', ms: cfg.preparedWaitMs },
      ],
    };
  }
  if ((s.phase === 'awaiting-finish' || s.phase === 'postcopy') && s.link === 'down') {
    const resumed: SourceEffect[] = [
      { type: 'log', level: 'info', msg: 'session resumed', data: { destPhase: e.destPhase, attempt: s.attempt } },
      { type: 'emit', name: 'link', data: { state: 'resumed', destPhase: e.destPhase } },
    ];
    const c: Context = { ...ctx, reconnects: ctx.reconnects + 1 };
    if (s.phase === 'postcopy') {
      return { state: { phase: 'postcopy', keys: s.keys, downtimeMs: s.downtimeMs, tally: newTally(), checking: false, link: 'up', ctx: c }, effects: [...resumed, ...extents(c)] };
    }
    const up: SourceState = { phase: 'awaiting-finish', keys: s.keys, pausedAt: s.pausedAt, link: 'up', ctx: c };
    const means = peerPhaseMeans(e.destPhase);
    if (means === 'running') return withFirst(resumed, enterPostcopy(up, null));
    if (means === 'not-running') return withFirst(resumed, rollback(up, new RolledBackError('PC_ERR_ROLLBACK', `destination is in phase ${e.destPhase}, not running the guest`)));
    // D has not answered yet (its Finish is under way): its FINISH_RESULT will come on this link.
    return { state: up, effects: resumed };
  }
  // Nobody waits for this connection any more (rolled back, stopped): let it go.
  return { state: { ...s, ctx } as SourceState, effects: [{ type: 'close-link' }] };
}

function onConnectFailed(cfg: SourceConfig, s: SourceState, e: Extract<SourceEvent, { type: 'connect-failed' }>, now: number): Step {
  if (s.phase === 'connecting') {
    // This loop owns the fresh connect's retries: an unreachable D, or one busy with strangers' handshakes
    // (they are cut within its handshake time box), is tried again until the connect deadline.
    const delay = backoffDelay(s.attempt, cfg.backoff, e.jitter);
    const retryable = e.stage === 'socket' || isDestBusy(e.error);
    if (!retryable || now + delay > s.deadline) return rollback(s, e.error);
    const why = e.stage === 'socket' ? 'destination not reachable yet; retrying' : 'destination busy with other connections; retrying';
    return {
      state: { ...s, attempt: s.attempt + 1 },
      effects: [{ type: 'log', level: 'info', msg: why, data: { attempt: s.attempt, delayMs: delay, err: e.error.message } }, { type: 'arm-timer', name: 'reconnect', ms: delay }],
    };
  }
  if ((s.phase === 'awaiting-finish' || s.phase === 'postcopy') && s.link === 'down') {
    // This loop owns the reconnect after cut-over: one attempt per `connect` effect, backoff between them.
    if (isAuthFailure(e.error) || now > s.deadline) return fail(s, e.error);
    const delay = backoffDelay(s.attempt, cfg.backoff, e.jitter);
    return {
      state: { ...s, attempt: s.attempt + 1 },
      effects: [{ type: 'log', level: 'warn', msg: 'resume failed; retrying', data: { attempt: s.attempt, delayMs: delay }, err: e.error }, { type: 'arm-timer', name: 'reconnect', ms: delay }],
    };
  }
  return ignore(s, e.type);
}

function onTimer(s: SourceState, name: 'prepared' | 'reconnect'): Step {
  if (name === 'prepared') {
    if (s.phase !== 'awaiting-prepared') return ignore(s, 'timer prepared');
    return rollback(s, new TimeoutError('PC_ERR_TIMEOUT', 'waiting for PREPARED'));
  }
  if (s.phase === 'connecting') return { state: s, effects: [{ type: 'connect', resume: null, deadline: s.deadline }] };
  if ((s.phase === 'awaiting-finish' || s.phase === 'postcopy') && s.link === 'down') {
    return { state: s, effects: [{ type: 'emit', name: 'link', data: { state: 'reconnecting', attempt: s.attempt } }, { type: 'connect', resume: s.keys, deadline: s.deadline }] };
  }
  return ignore(s, 'timer reconnect');
}

function onFinalCheck(s: SourceState, e: Extract<SourceEvent, { type: 'final-check-done' | 'final-check-failed' }>): Step {
  // A check of digests from an older link is void: D sends them again with its next COMPLETE.
  if (s.phase !== 'postcopy' || s.link !== 'up' || !s.checking || e.gen !== s.ctx.gen) return ignore(s, e.type);
  const checked = { ...s, checking: false };
  if (e.type === 'final-check-failed') return { state: checked, effects: [{ type: 'close-link', error: e.error }] };
  if (e.bad.length > 0) return { state: checked, effects: [{ type: 'send', msg: { type: 'DIGEST_MISMATCH', blocks: e.bad.slice(0, MAX_MISMATCH_BLOCKS) } }] };
  return confirm(s);
}

