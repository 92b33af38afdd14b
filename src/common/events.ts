// Machine-readable events for orchestrators: one JSON object per line (phase changes, progress, completion, errors).
import { closeSync, openSync, writeSync } from 'node:fs';
import { PRIVATE_FILE_MODE } from './constants.js';
import { UsageError } from './errors.js';

export type EventFields = Record<string, unknown>;

export interface EventSink {
  emit(event: string, fields?: EventFields): void;
  close(): void;
}

/** Appends events to a file (or does nothing without one); each line is written whole, so readers can tail it. */
export class JsonLinesEvents implements EventSink {
  #fd: number | null;
  readonly #role: string;
  readonly #listeners: Array<(event: string, fields: EventFields) => void> = [];
  #failing = false;

  constructor(path: string | undefined, role: string) {
    this.#fd = path ? openForAppend(path) : null;
    this.#role = role;
  }

  /** In-process observers (the progress bar) see the same events. */
  onEvent(fn: (event: string, fields: EventFields) => void): void {
    this.#listeners.push(fn);
  }

  emit(event: string, fields: EventFields = {}): void {
    for (const l of this.#listeners) l(event, fields);
    if (this.#fd === null) return;
    const line = JSON.stringify({ ts: new Date().toISOString(), role: this.#role, event, ...fields }) + '\n';
    try {
      writeSync(this.#fd, line);
      this.#failing = false;
    } catch (e) {
      // A full disk under the events file must not stop a migration: the line is lost, said once per episode.
      if (!this.#failing) process.stderr.write(`postcopy: warning: cannot write to the events file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); events are lost until it takes writes again\n`);
      this.#failing = true;
    }
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}

/** A path the operator gave: a missing directory or a directory named as the file is their mistake, said in one line. */
function openForAppend(path: string): number {
  try {
    return openSync(path, 'a', PRIVATE_FILE_MODE);
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--events ${path}: cannot open it for appending (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a file in an existing, writable directory`);
  }
}

export const nullEvents: EventSink = { emit() {}, close() {} };
