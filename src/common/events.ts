// Machine-readable events for orchestrators: one JSON object per line (phase changes, progress, completion, errors).
import { closeSync, openSync, writeSync } from 'node:fs';

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

  constructor(path: string | undefined, role: string) {
    this.#fd = path ? openSync(path, 'a', 0o600) : null;
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
    writeSync(this.#fd, line);
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}

export const nullEvents: EventSink = { emit() {}, close() {} };
