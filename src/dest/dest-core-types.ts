// The data of D's session core: its states, the events it is told and the effects it asks for. All plain
// values: the core (dest-core.ts) computes with them, the shell (dest-agent.ts) turns them into I/O.
import type { ErrorCode } from '../common/errors.js';
import type { GuestDefinition, Message, MessageOf } from '../protocol/messages.js';
import type { ImageFile } from './block-store.js';

/** The phase as persisted in the state file and shown to operators and to S's handshake (unchanged names). */
export type DestPhase = 'idle' | 'prepared' | 'receiving-ram' | 'postcopy' | 'complete' | 'confirmed' | 'aborted';

/**
 * The phase S's handshake and the operator see: the persisted one, except 'finishing' while the guest loads and
 * starts here (S reads it as undecided: neither running here yet nor rolled back).
 */
export type ShownPhase = DestPhase | 'finishing';

/** A failure as the core carries it: a code and a message; the shell builds the error class from the code. */
export interface Failure {
  code: ErrorCode;
  /** The whole message (what S is told in ABORT). */
  message: string;
  /** The specific part, without the code's fixed text (what a refusal tells S). */
  detail?: string;
  /** The error it came from, passed on as the rollback's cause (opaque to the core). */
  cause?: unknown;
  /** An operator mistake in S's request (same image, wrong size): S is told the code, D exits 2. */
  usage?: boolean;
}

export interface SessionKeys {
  sessionId: string;
  /** Hex, as persisted. */
  resumeKey: string;
}

/** What this session created or took, and so what a rollback may undo: nothing else is ever deleted. */
export interface Created {
  image: ImageFile | null;
  bitmap: boolean;
}

/** Everything the session knows that outlives one phase. */
export interface DestContext {
  keys: SessionKeys | null;
  geometry: { size: number; blockSize: number } | null;
  created: Created;
  stateDirCreated: boolean;
  /** A guest comes with this migration (its kind is the guest adapter's business). */
  guest: boolean;
  link: 'up' | 'down';
  /** The phase last persisted (or shown): what a restart and S's handshake see. */
  saved: DestPhase;
  resumes: number;
  finishMs: number | null;
}

export type TimerName = 'abort-grace' | 'confirm-grace';

export type DestState =
  | { phase: 'listening'; ctx: DestContext }
  /** BEGIN accepted; the store, the export and the guest are being readied, one adapter at a time. */
  | { phase: 'preparing'; ctx: DestContext; step: 'store' | 'export' | 'guest'; def: GuestDefinition | null; cookie: string }
  /** PREPARED sent: S sends the guest's state (or, with no guest, goes straight to DEVICE_STATE). */
  | { phase: 'receiving'; ctx: DestContext }
  /** DEVICE_STATE arrived: the guest loads, then starts; nothing has run here yet. */
  | { phase: 'finishing'; ctx: DestContext; step: 'load' | 'start'; startedAt: number }
  /** The guest runs here: never roll back, never delete. */
  | { phase: 'postcopy'; ctx: DestContext }
  /** Every block present and durable: computing the digests S checks. */
  | { phase: 'final-check'; ctx: DestContext }
  /** S found blocks that differ: they are being marked missing again. */
  | { phase: 'invalidating'; ctx: DestContext }
  | { phase: 'awaiting-confirm'; ctx: DestContext; digests: Digests; confirmGraceArmed: boolean }
  /** Before cut-over only: undoing what this session created, then telling the caller. */
  /** `discarding`: discards asked for and not yet answered. */
  | { phase: 'rolling-back'; ctx: DestContext; error: Failure; discarding: number; graceOver: boolean }
  | { phase: 'done'; ctx: DestContext; outcome: DestOutcome };

export type DestOutcome = { kind: 'confirmed' } | { kind: 'unconfirmed' } | { kind: 'rolled-back'; error: Failure } | { kind: 'stopped' };

/** Where each block that holds S's bytes is, and its CRC, as S checks them (block numbers ascending). */
export interface Digests {
  blocks: ArrayLike<number>;
  crcs: ArrayLike<number>;
}

/** A start that found a saved session (checked by planStart). */
export interface Restart {
  kind: 'resume' | 'rollback';
  phase: DestPhase;
  keys: SessionKeys;
  geometry: { size: number; blockSize: number };
  image: ImageFile | null;
  stateDirCreated: boolean;
}

export type AdapterResult = { ok: true } | { ok: false; error: Failure };

export type DestEvent =
  /** A decoded message from the current link (BLOCK_* replies go straight to the fetcher: data plane). */
  | { type: 'peer'; msg: Message }
  /** Something the guest adapter found wrong in S's guest frames (beyond credit, page out of range). */
  | { type: 'peer-violation'; error: Failure }
  | { type: 'link-up'; keys: SessionKeys; resumed: boolean }
  | { type: 'link-down'; error: Failure }
  | { type: 'timer'; name: TimerName }
  | { type: 'store-prepared'; result: AdapterResult; created: Created }
  | { type: 'export-started'; result: AdapterResult }
  | { type: 'guest-prepared'; result: AdapterResult }
  /** The guest took all of S's state (RAM digest checked, hypervisor loaded): it may run. */
  | { type: 'guest-loaded'; result: AdapterResult }
  /** A hypervisor that could not load S's stream, found before DEVICE_STATE. */
  | { type: 'guest-load-failed'; error: Failure }
  | { type: 'guest-started'; result: AdapterResult }
  | { type: 'store-complete' }
  | { type: 'digests-ready'; digests: Digests }
  | { type: 'invalidated'; again: number }
  | { type: 'discarded' }
  /**
   * D's own I/O failed (state dir unwritable, read-back failed). `skipped`: a batch stopped at the failing effect, and
   * these after it did not run. `from`: the asynchronous effect whose work failed.
   */
  | { type: 'local-fault'; error: Failure; skipped?: ReadonlyArray<DestEffect['type']>; from?: DestEffect['type'] }
  | { type: 'restarted'; restart: Restart }
  /** The operator stops D (close(), SIGTERM): state kept. */
  | { type: 'stop' };

export type DestEffect =
  | { type: 'send'; msg: Message }
  /** Durable before the next effect runs; `bestEffort`: a failure is logged and the rest goes on. */
  | { type: 'persist'; phase: DestPhase; syncDir?: boolean; bestEffort?: boolean; forgetOnFailure?: boolean }
  | { type: 'prepare-store'; size: number; blockSize: number; begin: MessageOf<'BEGIN'> }
  | { type: 'start-export'; restart: boolean }
  | { type: 'stop-export' }
  | { type: 'prepare-guest'; def: GuestDefinition }
  /** Open S's credit window for the guest's state and watch for a load that fails early. */
  | { type: 'open-guest' }
  | { type: 'guest-frame'; msg: MessageOf<'RAM_PAGES'> | MessageOf<'GUEST_STREAM'> | MessageOf<'GUEST_STREAM_END'> }
  | { type: 'load-guest'; final: MessageOf<'DEVICE_STATE'> }
  | { type: 'start-guest' }
  | { type: 'abort-guest' }
  | { type: 'start-copy-on-read' }
  | { type: 'apply-zero-runs'; msg: MessageOf<'EXTENTS'> }
  | { type: 'start-stream' }
  | { type: 'stop-stream' }
  | { type: 'fill-stream' }
  /** Route fetches to the current link (after auth) / tell the fetcher S is away (fallback's wait starts). */
  | { type: 'attach-fetches' }
  | { type: 'source-gone' }
  | { type: 'fail-fetches'; error: Failure }
  | { type: 'watch-complete' }
  | { type: 'compute-digests' }
  | { type: 'invalidate'; blocks: number[] }
  | { type: 'away-start' }
  | { type: 'away-stop' }
  | { type: 'arm-timer'; name: TimerName }
  | { type: 'cancel-timer'; name: TimerName }
  /** Close the store, then delete only what this session created; answered by `discarded`. */
  | { type: 'discard-created'; created: Created }
  /** Remove the session's own state files (and the state dir if this session made it and it is empty). */
  | { type: 'remove-session-files' }
  /** Close the current link, with an error frame when `error` is given. */
  | { type: 'close-link'; error?: Failure }
  /** `progress`: the shell adds its progress figures (blocks present, bytes only on S). */
  | { type: 'emit'; event: string; fields: Record<string, unknown>; progress?: boolean }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> }
  | { type: 'finish'; outcome: DestOutcome };

export interface StepResult {
  state: DestState;
  effects: DestEffect[];
  /** Set when the event was illegal in that phase: the effects are its one failure path (log, error frame, the phase's link-loss transition). */
  illegal?: Failure;
}
