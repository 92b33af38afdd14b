// ReconnectingNbdClient: an NbdClient that survives a dropped connection. Idempotent requests
// (read, blockStatus, cache) caught by the drop are re-issued once it has reconnected with
// backoff; writes fail with LinkClosedError (the caller decides). Attempts and time are bounded.
// This layer owns every retry after a connection loss (NbdSourceImage above it retries only the server's
// transient errors): one loop per call, one connect attempt per turn.
import { setTimeout as sleep } from 'node:timers/promises';
import { LinkClosedError, NbdError } from '../common/errors.js';
import { backoffDelay } from '../common/retry.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { NbdClient, type BlockStatusExtent, type NbdClientOptions, type NbdTarget, type RequestOptions } from './client.js';

export interface ReconnectPolicy {
  /** Connection attempts per outage before giving up. Default 8. */
  maxAttempts?: number;
  /** First backoff delay; doubles each attempt. Default 100 ms. */
  initialDelayMs?: number;
  /** Longest backoff delay. Default 5 s. */
  maxDelayMs?: number;
  /** Give up on an outage after this long. Default 60 s. */
  maxElapsedMs?: number;
}

/** A dropped connection, as opposed to the server refusing a request. */
export function isConnectionLoss(err: unknown): boolean {
  return err instanceof NbdError && (err.code === 'NBD_ERR_CLOSED' || err.code === 'NBD_ERR_HANDSHAKE');
}

export class ReconnectingNbdClient {
  readonly #target: NbdTarget;
  readonly #exportName: string | undefined;
  readonly #clientOpts: NbdClientOptions;
  readonly #policy: Required<ReconnectPolicy>;
  readonly #log: Logger;
  #client: NbdClient;
  #reconnecting: Promise<NbdClient> | undefined;
  #closed = false;
  #reconnects = 0;

  private constructor(client: NbdClient, target: NbdTarget, exportName: string | undefined, opts: NbdClientOptions, policy: ReconnectPolicy) {
    this.#client = client;
    this.#target = target;
    this.#exportName = exportName;
    this.#clientOpts = opts;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'nbd-reconnect' });
    this.#policy = {
      maxAttempts: policy.maxAttempts ?? 8,
      initialDelayMs: policy.initialDelayMs ?? 100,
      maxDelayMs: policy.maxDelayMs ?? 5000,
      maxElapsedMs: policy.maxElapsedMs ?? 60_000,
    };
  }

  static async connect(
    target: NbdTarget,
    exportName?: string,
    opts: NbdClientOptions & { reconnect?: ReconnectPolicy } = {},
  ): Promise<ReconnectingNbdClient> {
    const client = await NbdClient.connect(target, exportName, opts);
    return new ReconnectingNbdClient(client, target, exportName, opts, opts.reconnect ?? {});
  }

  get size(): number {
    return this.#client.size;
  }
  get baseAllocation(): boolean {
    return this.#client.baseAllocation;
  }
  get readOnly(): boolean {
    return this.#client.readOnly;
  }
  /** The connection in use now (it changes after a reconnect). */
  get current(): NbdClient {
    return this.#client;
  }
  /** How many times the connection has been re-established. */
  get reconnects(): number {
    return this.#reconnects;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#idempotent((c) => c.read(offset, length));
  }
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.#idempotent((c) => c.blockStatus(offset, length));
  }
  cache(offset: number, length: number): Promise<void> {
    return this.#idempotent((c) => c.cache(offset, length));
  }
  write(offset: number, data: Buffer, opts?: RequestOptions): Promise<void> {
    return this.#once((c) => c.write(offset, data, opts));
  }
  flush(): Promise<void> {
    return this.#once((c) => c.flush());
  }
  trim(offset: number, length: number, opts?: RequestOptions): Promise<void> {
    return this.#once((c) => c.trim(offset, length, opts));
  }
  writeZeroes(offset: number, length: number, opts?: RequestOptions & { noHole?: boolean }): Promise<void> {
    return this.#once((c) => c.writeZeroes(offset, length, opts));
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#reconnecting;
    if (pending) await pending.catch(() => undefined);
    await this.#client.close();
  }

  /** Run fn; if the connection drops under it, reconnect and run it again (bounded). */
  #idempotent<T>(fn: (c: NbdClient) => Promise<T>): Promise<T> {
    return this.#run(fn, true);
  }

  /** Non-idempotent: one try; a drop is reported as LinkClosedError, the next call reconnects. */
  #once<T>(fn: (c: NbdClient) => Promise<T>): Promise<T> {
    return this.#run(fn, false);
  }

  /**
   * The one retry loop: each turn makes at most one connect attempt (shared by concurrent callers) and one try
   * of `fn`. A failed connect waits out the backoff; a request lost with the connection is re-issued at once if
   * it is idempotent. At most maxAttempts turns and maxElapsedMs per call; then LinkClosedError.
   */
  async #run<T>(fn: (c: NbdClient) => Promise<T>, idempotent: boolean): Promise<T> {
    const started = Date.now();
    let failedConnects = 0;
    for (let turn = 1; ; turn++) {
      if (this.#closed) throw new NbdError('NBD_ERR_CLOSED', 'client is closed');
      let client: NbdClient;
      try {
        client = await this.#usable();
      } catch (err) {
        if (this.#closed || isSizeChange(err)) throw this.#gaveUp(started, err);
        const delay = backoffDelay(failedConnects++, { initialMs: this.#policy.initialDelayMs, maxMs: this.#policy.maxDelayMs });
        if (turn >= this.#policy.maxAttempts || Date.now() - started + delay > this.#policy.maxElapsedMs) throw this.#gaveUp(started, err);
        this.#log.debug({ err, turn }, 'NBD reconnect attempt failed');
        await sleep(delay);
        continue;
      }
      try {
        return await fn(client);
      } catch (err) {
        if (!isConnectionLoss(err)) throw err;
        if (!idempotent) throw new LinkClosedError('PC_ERR_LINK_CLOSED', `NBD connection lost: ${(err as Error).message}`, { cause: err });
        if (this.#closed || turn >= this.#policy.maxAttempts) throw this.#gaveUp(started, err);
        this.#log.debug({ err, turn }, 'NBD connection lost under an idempotent request; retrying after reconnect');
      }
    }
  }

  #gaveUp(started: number, cause: unknown): LinkClosedError {
    return new LinkClosedError('PC_ERR_LINK_CLOSED', `NBD reconnect gave up after ${Date.now() - started} ms`, { cause });
  }

  /** The current client, after one reconnect attempt if it has failed (concurrent callers share the attempt). */
  async #usable(): Promise<NbdClient> {
    if (this.#client.failure === undefined) return this.#client;
    this.#reconnecting ??= this.#reconnectOnce().finally(() => {
      this.#reconnecting = undefined;
    });
    return this.#reconnecting;
  }

  async #reconnectOnce(): Promise<NbdClient> {
    const oldSize = this.#client.size;
    this.#log.warn({ err: this.#client.failure }, 'NBD connection lost; reconnecting');
    const client = await NbdClient.connect(this.#target, this.#exportName, this.#clientOpts);
    if (client.size !== oldSize) {
      await client.close();
      throw new NbdError('NBD_ERR_HANDSHAKE', `export size changed from ${oldSize} to ${client.size} across reconnect`);
    }
    this.#client = client;
    this.#reconnects++;
    this.#log.info({ reconnects: this.#reconnects }, 'NBD connection re-established');
    return client;
  }
}

function isSizeChange(err: unknown): boolean {
  return err instanceof NbdError && err.code === 'NBD_ERR_HANDSHAKE' && /size changed/.test(err.message);
}
