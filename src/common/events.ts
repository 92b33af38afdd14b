// Machine-readable events for orchestrators: one JSON object per line (phase changes, progress, completion, errors).
// The interface is written down in schema/events.v1.json and EVENTS.md; every line carries the envelope below.
import { closeSync, openSync, writeSync } from 'node:fs';
import { EVENTS_SCHEMA_VERSION, PRIVATE_FILE_MODE, PROGRESS_IDLE_SAMPLES } from './constants.js';
import { UsageError } from './errors.js';

/**
 * Progress fields that move while the migration does not, so they never count as a change: timings (`…Ms`), rates
 * (`…PerSec`), D's path model (round trips, window, pacing), stage percentiles, and the guest's own I/O counters.
 */
const MOVES_ON_ITS_OWN = /(Ms|PerSec)$|^path$|Stages$|^guest[A-Z]|^commits$/;

export type EventFields = Record<string, unknown>;
export type EventRole = 'source' | 'dest';

export interface EventSink {
  emit(event: string, fields?: EventFields): void;
  /** The migration session's id, once the handshake (or the state dir of a restarted agent) gives it. */
  setSession(id: string): void;
  close(): void;
}

/** Appends events to a file (or does nothing without one); each line is written whole, so readers can tail it. */
export class JsonLinesEvents implements EventSink {
  #fd: number | null;
  readonly #role: EventRole;
  #sessionId: string | null = null;
  readonly #progress = new ProgressFilter();
  readonly #listeners: Array<(event: string, fields: EventFields) => void> = [];
  #failing = false;

  constructor(path: string | undefined, role: EventRole) {
    this.#fd = path ? openForAppend(path) : null;
    this.#role = role;
  }

  /** In-process observers (the progress bar) see every event, every progress sample included. */
  onEvent(fn: (event: string, fields: EventFields) => void): void {
    this.#listeners.push(fn);
  }

  /** From here on every line names this session; a resumed session keeps its id, so a second call is harmless. */
  setSession(id: string): void {
    this.#sessionId = id;
  }

  emit(event: string, fields: EventFields = {}): void {
    for (const l of this.#listeners) l(event, fields);
    if (this.#fd === null) return;
    const line = this.#line(event, fields);
    if (event === 'progress') {
      if (this.#progress.admit(fields, line)) this.#write(line);
      return;
    }
    this.#writeHeldProgress();
    this.#write(line);
  }

  close(): void {
    this.#writeHeldProgress();
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  /**
   * The latest progress sample is never lost: one held back as unchanged goes out before the next other event (so
   * `complete` and `exit` follow the last figures, in the order they were taken) or at close.
   */
  #writeHeldProgress(): void {
    const held = this.#progress.takeHeld();
    if (held !== null) this.#write(held);
  }

  #line(event: string, fields: EventFields): string {
    const envelope = { schemaVersion: EVENTS_SCHEMA_VERSION, ts: new Date().toISOString(), role: this.#role, sessionId: this.#sessionId, event };
    // The envelope first and last: first for the order a reader sees, last so no payload field can replace it.
    return JSON.stringify({ ...envelope, ...fields, ...envelope }) + '\n';
  }

  #write(line: string): void {
    if (this.#fd === null) return;
    try {
      writeSync(this.#fd, line);
      this.#failing = false;
    } catch (e) {
      // A full disk under the events file must not stop a migration: the line is lost, said once per episode.
      if (!this.#failing) process.stderr.write(`postcopy: warning: cannot write to the events file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); events are lost until it takes writes again\n`);
      this.#failing = true;
    }
  }
}

/**
 * Which progress samples reach the file: one whose progress differs from the last written, or every
 * PROGRESS_IDLE_SAMPLES-th while nothing changes. The latest held-back line is kept for the writer to flush.
 */
export class ProgressFilter {
  #lastKey: string | null = null;
  #unchanged = 0;
  #held: string | null = null;

  admit(fields: EventFields, line: string): boolean {
    const key = progressKey(fields);
    if (key !== this.#lastKey || ++this.#unchanged >= PROGRESS_IDLE_SAMPLES) {
      this.#lastKey = key;
      this.#unchanged = 0;
      this.#held = null;
      return true;
    }
    this.#held = line;
    return false;
  }

  takeHeld(): string | null {
    const held = this.#held;
    this.#held = null;
    return held;
  }
}

/** The sample's progress: every field but those that move on their own, nested objects included. */
function progressKey(fields: EventFields): string {
  return JSON.stringify(fields, (k, v: unknown) => (k !== '' && MOVES_ON_ITS_OWN.test(k) ? undefined : v));
}

/** A path the operator gave: a missing directory or a directory named as the file is their mistake, said in one line. */
function openForAppend(path: string): number {
  try {
    return openSync(path, 'a', PRIVATE_FILE_MODE);
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--events ${path}: cannot open it for appending (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a file in an existing, writable directory`);
  }
}

export const nullEvents: EventSink = { emit() {}, setSession() {}, close() {} };
