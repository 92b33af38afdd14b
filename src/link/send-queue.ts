// The link's two send queues: urgent frames (control, demand data) always before bulk ones, a cap on each, and
// producers of bulk data waiting for room. No I/O: the link takes frames from here and writes them.
import type { Duplex } from 'node:stream';

export interface QueuedFrame {
  parts: Buffer[];
  bytes: number;
  /** Called once the socket has handed the frame's bytes to the kernel (never, if the link closes first). */
  onWritten?: () => void;
  /** Called once the frame has been written to the socket (the stage timings' "handed to the socket"). */
  onSent?: () => void;
}

export class SendQueue {
  readonly #urgent: QueuedFrame[] = [];
  readonly #bulk: QueuedFrame[] = [];
  readonly #maxUrgent: number;
  readonly #maxBulkBytes: number;
  #bulkBytes = 0;
  #bulkWaiters: Array<() => void> = [];

  constructor(maxUrgentFrames: number, maxBulkBytes: number) {
    this.#maxUrgent = maxUrgentFrames;
    this.#maxBulkBytes = maxBulkBytes;
  }

  get bulkBytes(): number {
    return this.#bulkBytes;
  }

  /** Queue a frame; false when the urgent queue is full (a bug or a flood: the caller closes the link). */
  push(frame: QueuedFrame, urgent: boolean): boolean {
    if (urgent) {
      if (this.#urgent.length >= this.#maxUrgent) return false;
      this.#urgent.push(frame);
    } else {
      this.#bulk.push(frame);
      this.#bulkBytes += frame.bytes;
    }
    return true;
  }

  /** The next frame to write: urgent first. */
  next(): QueuedFrame | undefined {
    return this.#urgent.shift() ?? this.#takeBulk();
  }

  /** The urgent frames, removed: a clean close still sends them. */
  takeUrgent(): QueuedFrame[] {
    return this.#urgent.splice(0);
  }

  /** Resolves when the bulk queue has room (or the queue is cleared). */
  waitBulkSpace(): Promise<void> {
    if (this.#bulkBytes < this.#maxBulkBytes) return Promise.resolve();
    return new Promise((resolve) => this.#bulkWaiters.push(resolve));
  }

  /** Drop every frame; with `releaseWaiters`, producers waiting for room wake too (the link closed). */
  clear(releaseWaiters: boolean): void {
    this.#urgent.length = 0;
    this.#bulk.length = 0;
    if (!releaseWaiters) return;
    this.#bulkBytes = 0;
    this.#wakeWaiters();
  }

  #takeBulk(): QueuedFrame | undefined {
    const f = this.#bulk.shift();
    if (!f) return undefined;
    this.#bulkBytes -= f.bytes;
    if (this.#bulkWaiters.length > 0 && this.#bulkBytes < this.#maxBulkBytes) this.#wakeWaiters();
    return f;
  }

  #wakeWaiters(): void {
    const waiters = this.#bulkWaiters;
    this.#bulkWaiters = [];
    for (const w of waiters) w();
  }
}

/** Write a frame's parts; its onWritten runs with the last part's write callback (every part is taken by then). */
export function writeParts(s: Duplex, f: QueuedFrame): void {
  const last = f.parts.length - 1;
  for (let i = 0; i < last; i++) s.write(f.parts[i]);
  if (last >= 0) s.write(f.parts[last], f.onWritten ? () => f.onWritten!() : undefined);
  else f.onWritten?.();
}
