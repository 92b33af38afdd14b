// NbdSourceImage: the SourceImage S serves from when its image lives on an NBD server. Read-only;
// the server's transient errors (EIO from a flaky backend) are retried with backoff here, never papered over.
// A dropped connection is not retried here: ReconnectingNbdClient below owns that retry (one layer each).
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '../common/retry.js';
import type { Extent, SourceImage } from '../common/block-device.js';
import { BackendError, NbdError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/logger.js';
import type { BlockStatusExtent, NbdClientOptions, NbdTarget } from './client.js';
import * as C from './constants.js';
import { ReconnectingNbdClient, type ReconnectPolicy } from './reconnecting-client.js';

/** What NbdSourceImage needs from a connection (NbdClient and ReconnectingNbdClient both fit). */
export interface NbdReader {
  readonly size: number;
  readonly baseAllocation: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]>;
  close(): Promise<void>;
}

export interface RetryPolicy {
  /** Tries per read or status window, the first included. Default 6. */
  attempts?: number;
  /** First backoff; doubles each retry. Default 20 ms. */
  initialDelayMs?: number;
  /** Longest backoff. Default 2 s. */
  maxDelayMs?: number;
}

export interface NbdSourceImageOptions {
  logger?: Logger;
  retry?: RetryPolicy;
  /** BLOCK_STATUS window for extents(). Default 1 GiB. */
  windowBytes?: number;
}

/** Errors worth another try here: the server's I/O failed or it is briefly out of resources (a lost connection is the client's to retry). */
const TRANSIENT_ERRNOS = new Set([C.NBD_EIO, C.NBD_ENOMEM, C.NBD_ESHUTDOWN]);

export function isTransient(err: unknown): boolean {
  if (!(err instanceof NbdError)) return false;
  return err.code === 'NBD_ERR_REQUEST' && err.errno !== undefined && TRANSIENT_ERRNOS.has(err.errno);
}

export class NbdSourceImage implements SourceImage {
  readonly #reader: NbdReader;
  readonly #log: Logger;
  readonly #retry: Required<RetryPolicy>;
  readonly #window: number;

  constructor(reader: NbdReader, opts: NbdSourceImageOptions = {}) {
    this.#reader = reader;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'nbd-source' });
    this.#retry = {
      attempts: Math.max(1, opts.retry?.attempts ?? 6),
      initialDelayMs: opts.retry?.initialDelayMs ?? 20,
      maxDelayMs: opts.retry?.maxDelayMs ?? 2000,
    };
    this.#window = opts.windowBytes ?? 1024 * 1024 * 1024;
  }

  /** Connect (with reconnect on drops) and wrap. */
  static async open(
    target: NbdTarget,
    exportName?: string,
    opts: NbdSourceImageOptions & { client?: NbdClientOptions; reconnect?: ReconnectPolicy } = {},
  ): Promise<NbdSourceImage> {
    const clientOpts: NbdClientOptions & { reconnect?: ReconnectPolicy } = { ...opts.client };
    if (opts.logger) clientOpts.logger = opts.logger;
    if (opts.reconnect) clientOpts.reconnect = opts.reconnect;
    const client = await ReconnectingNbdClient.connect(target, exportName, clientOpts);
    return new NbdSourceImage(client, opts);
  }

  get size(): number {
    return this.#reader.size;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#withRetry('read', offset, length, () => this.#reader.read(offset, length));
  }

  /** The whole allocation map in order, adjacent runs of the same kind merged. */
  async extents(): Promise<Extent[]> {
    const size = this.#reader.size;
    if (size === 0) return [];
    if (!this.#reader.baseAllocation) return [{ offset: 0, length: size, zero: false }];
    const out: Extent[] = [];
    for (let offset = 0; offset < size; offset += this.#window) {
      const length = Math.min(this.#window, size - offset);
      const status = await this.#withRetry('blockStatus', offset, length, () => this.#reader.blockStatus(offset, length));
      for (const s of status) {
        const zero = (s.flags & C.NBD_STATE_ZERO) !== 0;
        const last = out[out.length - 1];
        if (last && last.zero === zero && last.offset + last.length === s.offset) last.length += s.length;
        else out.push({ offset: s.offset, length: s.length, zero });
      }
    }
    return out;
  }

  close(): Promise<void> {
    return this.#reader.close();
  }

  async #withRetry<T>(op: string, offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || attempt >= this.#retry.attempts) {
          throw new BackendError('PC_ERR_BACKEND', `NBD ${op} [${offset}, +${length}) failed after ${attempt} tries`, { cause: err });
        }
        this.#log.debug({ err, op, offset, length, attempt }, 'NBD source I/O failed; retrying');
        await sleep(backoffDelay(attempt - 1, { initialMs: this.#retry.initialDelayMs, maxMs: this.#retry.maxDelayMs }));
      }
    }
  }
}
