// S's session core, as data: its states (one per sub-state of the migration), the events that drive it and the
// effects it asks the shell (source-agent.ts) for. The transitions are in source-core.ts.
import type { PostcopyError } from '../common/errors.js';
import type { Backoff } from '../common/retry.js';
import type { FinalState, PrecopyResult } from '../guest/source-guest.js';
import type { Message } from '../protocol/messages.js';

/** The phases S reports (events, state file, `phase`): the core's states map onto them. */
export type SourcePhase = 'connecting' | 'begin' | 'perform' | 'awaiting-finish' | 'postcopy' | 'confirmed' | 'rolled-back';

export interface SessionKeys {
  sessionId: string;
  /** Hex, as the state file holds it. */
  resumeKey: string;
}

/** The link after cut-over: up, or down with one connect attempt or one backoff timer outstanding. */
export type Reconnect = { link: 'up' } | { link: 'down'; attempt: number; deadline: number };

/** D's final-check digests as they arrive: how many, those that differ from what we sent, those we never sent. */
export interface DigestTally {
  received: number;
  bad: number[];
  unknown: Array<[number, number]>;
}

/** What lasts across phases. `gen` names the current link: a result about an older one is stale. */
export interface Context {
  gen: number;
  reconnects: number;
  precopy: PrecopyResult | null;
  scan: 'idle' | 'running' | 'done';
}

export type SourceState = { readonly ctx: Context } & (
  | { phase: 'idle' }
  | { phase: 'connecting'; attempt: number; deadline: number }
  | { phase: 'awaiting-prepared'; keys: SessionKeys }
  | { phase: 'precopy'; keys: SessionKeys }
  | ({ phase: 'awaiting-finish'; keys: SessionKeys; pausedAt: number | null } & Reconnect)
  /** `checking`: a final check asked for at D's COMPLETE is running; only its result may confirm. */
  | ({ phase: 'postcopy'; keys: SessionKeys; downtimeMs: number | null; tally: DigestTally; checking: boolean } & Reconnect)
  | { phase: 'done'; keys: SessionKeys; downtimeMs: number | null }
  | { phase: 'rolled-back'; failedIn: SourcePhase }
  | { phase: 'failed'; was: SourcePhase }
);

export type TimerName = 'prepared' | 'reconnect';

/** The saved session a restarted S resumes (only phases after the final state was sent are resumed). */
export interface RestartPoint extends SessionKeys {
  phase: 'awaiting-finish' | 'postcopy';
}

export type SourceEvent =
  | { type: 'start' }
  | { type: 'restarted'; saved: RestartPoint }
  | { type: 'connected'; sessionId: string; resumeKey: string; destPhase: string; version: number }
  | { type: 'connect-failed'; error: PostcopyError; stage: 'socket' | 'handshake'; jitter: number }
  | { type: 'link-down'; gen: number; error: PostcopyError | null }
  /** A decoded control message (BLOCK_REQ, CREDIT and the guest's stream go to the data plane, not here). */
  | { type: 'peer'; msg: Message; sent?: ReadonlyArray<number | undefined> }
  | { type: 'timer'; name: TimerName }
  | { type: 'precopy-done'; final: FinalState }
  | { type: 'precopy-failed'; error: PostcopyError }
  | { type: 'final-check-done'; gen: number; bad: number[] }
  | { type: 'final-check-failed'; gen: number; error: PostcopyError }
  | { type: 'extents-done' }
  | { type: 'extents-failed'; error: unknown }
  /** The operator's stop request. */
  | { type: 'abort'; reason: string }
  /** The process stops serving (after a refused stop): no more reconnecting. */
  | { type: 'close' }
  /** An effect the shell ran failed locally (not the peer's doing); the effects after it were not run. */
  | { type: 'local-failure'; effect: SourceEffect['type']; error: PostcopyError };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type SourceEffect =
  | { type: 'connect'; resume: SessionKeys | null; deadline: number }
  | { type: 'send'; msg: Message }
  | { type: 'send-begin' }
  | { type: 'send-device-state'; state: Record<string, unknown>; ramDigest: string }
  | { type: 'close-link'; error?: PostcopyError }
  | { type: 'persist'; keys: SessionKeys; phase: SourcePhase }
  | { type: 'remove-state' }
  | { type: 'start-guest' }
  | { type: 'resume-guest'; migrationStarted: boolean }
  | { type: 'shutdown-guest' }
  | { type: 'start-precopy' }
  | { type: 'stop-precopy'; error: PostcopyError }
  | { type: 'clear-read-cache' }
  | { type: 'make-read-only' }
  | { type: 'start-extent-scan' }
  | { type: 'send-extents'; end: boolean }
  | { type: 'final-check'; gen: number; tally: DigestTally }
  | { type: 'arm-timer'; name: TimerName; ms: number }
  | { type: 'cancel-timer'; name: TimerName }
  | { type: 'emit'; name: string; data: Record<string, unknown> }
  | { type: 'log'; level: LogLevel; msg: string; data?: Record<string, unknown>; err?: unknown }
  /** The "bytes only here" warning, said once per loss after cut-over (the shell knows the bytes). */
  | { type: 'warn-link-lost' }
  | { type: 'report-complete' }
  | { type: 'close-image' }
  | { type: 'finish'; sessionId: string; precopy: PrecopyResult | null; downtimeMs: number | null; reconnects: number }
  | { type: 'rollback'; error: PostcopyError; precopy: PrecopyResult | null }
  | { type: 'fail'; error: PostcopyError };

/** What the core knows of its session that never changes. */
export interface SourceConfig {
  size: number;
  blockSize: number;
  connectTimeoutMs: number;
  /** After cut-over S keeps trying to reach D for this long after each loss (Infinity: forever). */
  resumeTimeoutMs: number;
  backoff: Backoff;
  preparedWaitMs: number;
}

export interface Step {
  state: SourceState;
  effects: SourceEffect[];
}
