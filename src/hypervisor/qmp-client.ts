// A small QMP client (QEMU Machine Protocol) on a Unix socket: greeting, qmp_capabilities, commands matched to
// replies by id, asynchronous events; every failure is a HypervisorError whose message fits on one line.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import {
  QMP_COMMAND_TIMEOUT_MS,
  QMP_CONNECT_TIMEOUT_MS,
  QMP_MAX_LINE_BYTES,
  QMP_MIN_GREETING_MS,
  QMP_QUOTE_CHARS,
  QMP_RETRY_MS,
} from './constants.js';
import { HypervisorError } from './errors.js';
import { connectUnixSocket } from './unix-socket.js';

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** Host wall clock of the event, in ms (from QEMU's own timestamp). */
  at: number;
}

type Pending = { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [HypervisorError | null];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  readonly #socket: Socket;
  readonly #path: string;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #buf = '';
  #greeting: ((v: Record<string, unknown>) => void) | null = null;
  #closed: HypervisorError | null = null;

  private constructor(socket: Socket, path: string) {
    super();
    this.#socket = socket;
    this.#path = path;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${path}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.#fail(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${path}: QEMU closed the connection`)));
  }

  /**
   * Connect, read the greeting and leave capabilities negotiation mode. A QEMU started a moment ago may not
   * have created its socket yet: retry until `timeoutMs`.
   */
  static async connect(path: string, opts: { timeoutMs?: number; alive?: () => boolean } = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? QMP_CONNECT_TIMEOUT_MS);
    for (;;) {
      try {
        const socket = await connectUnixSocket(path);
        const client = new QmpClient(socket, path);
        const greeting = await client.#awaitGreeting(Math.max(QMP_MIN_GREETING_MS, deadline - Date.now()));
        if (!greeting.QMP) throw new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${path}: no greeting (is this a QMP socket?)`);
        await client.execute('qmp_capabilities');
        return client;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retryable || Date.now() > deadline || (opts.alive && !opts.alive())) {
          if (e instanceof HypervisorError) throw e;
          throw new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${path}: ${(e as Error).message}`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, QMP_RETRY_MS));
      }
    }
  }

  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Run a command; rejects with QEMU's error description (class and text) as one line. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = QMP_COMMAND_TIMEOUT_MS): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${command}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.#socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Resolves with the first event named `name` that satisfies `pred`, or rejects when QMP closes. */
  waitEvent(name: string, pred: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !pred(e)) return;
        this.off('close', onClose);
        this.off('event', onEvent);
        resolve(e);
      };
      const onClose = (err: HypervisorError | null) => {
        this.off('event', onEvent);
        reject(err ?? new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${this.#path}: closed while waiting for ${name}`));
      };
      this.on('event', onEvent);
      this.once('close', onClose);
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #awaitGreeting(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close();
        reject(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${this.#path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#greeting = (g) => {
        clearTimeout(timer);
        resolve(g);
      };
      this.once('close', (err) => {
        clearTimeout(timer);
        reject(err ?? new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${this.#path}: closed before the greeting`));
      });
    });
  }

  #onData(chunk: string): void {
    this.#buf += chunk;
    for (;;) {
      const nl = this.#buf.indexOf('\n');
      if (nl < 0) break;
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line.length > 0) this.#onLine(line);
    }
    if (this.#buf.length > QMP_MAX_LINE_BYTES) {
      this.#fail(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${this.#path}: a line over ${QMP_MAX_LINE_BYTES} bytes`));
    }
  }

  #onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#fail(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${this.#path}: not JSON: ${line.slice(0, QMP_QUOTE_CHARS)}`));
      return;
    }
    if ('QMP' in msg) {
      this.#greeting?.(msg);
      this.#greeting = null;
      return;
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp as { seconds?: number; microseconds?: number } | undefined;
      const at = ts?.seconds !== undefined ? ts.seconds * 1000 + Math.floor((ts.microseconds ?? 0) / 1000) : Date.now();
      this.emit('event', { event: msg.event, data: (msg.data as Record<string, unknown>) ?? {}, at });
      return;
    }
    const id = typeof msg.id === 'number' ? msg.id : -1;
    const p = this.#pending.get(id);
    if (!p) return; // a reply to a command whose wait timed out
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${p.command}: ${err.desc ?? 'failed'} (${err.class ?? 'GenericError'})`));
    } else {
      p.resolve(msg.return);
    }
  }

  #fail(err: HypervisorError): void {
    if (this.#closed) return;
    this.#closed = err;
    this.#socket.destroy();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new HypervisorError('PC_ERR_HYPERVISOR', `QMP ${p.command}: ${err.detail}`));
    }
    this.#pending.clear();
    this.emit('close', err);
  }
}
