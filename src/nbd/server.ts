// NbdServer: exports named BlockDevices over fixed-newstyle NBD on TCP and/or Unix sockets,
// many clients at once; one misbehaving client is cut off without disturbing the others, and idle or
// abandoned ones make room for a new client at the connection cap.
import net from 'node:net';
import type { BlockDevice } from '../common/block-device.js';
import { NbdError, UsageError } from '../common/errors.js';
import { withTimeout } from '../common/retry.js';
import type { Logger } from '../common/logger.js';
import type { BlockSizeLimits } from './codec.js';
import * as C from './constants.js';
import { ServerConnection } from './server-connection.js';
import { DEFAULT_MAX_OPTION_LENGTH } from './server-decoder.js';
import type { ExportCatalog, NbdExport } from './server-negotiation.js';
import { TlsAcceptor, type NbdTlsCredentials } from './server-tls.js';
import { DEFAULT_SOCKET_MODE, listenUnix, removeSocketFile, type SocketFile } from './socket-file.js';

export type { NbdTlsCredentials } from './server-tls.js';

export type { NbdExport } from './server-negotiation.js';

export const DEFAULT_EXPORT_NAME = 'disk';

export interface NbdServerOptions {
  /** One device (exported as "disk") or several named exports; the first is the default for "". */
  exports: BlockDevice | readonly NbdExport[];
  logger: Logger;
  /** Advertised minimum block size (power of 2 ≤ 64 KiB; falls back to 1 if it does not divide the size). Default 1. */
  minimumBlockSize?: number;
  /** Advertised preferred block size. Default 4096. */
  preferredBlockSize?: number;
  /** Largest READ/WRITE payload served and advertised. Default 32 MiB. */
  maxPayload?: number;
  /** Requests in flight per connection before the socket is paused. Default 64 (nbdcopy's depth). */
  maxInFlight?: number;
  /** READ/WRITE payload bytes in flight per connection before the socket is paused. Default 64 MiB. */
  maxInFlightBytes?: number;
  /** Options per connection before it is cut off. Default 256. */
  maxOptions?: number;
  /** Largest option data accepted. Default 1 MiB. */
  maxOptionLength?: number;
  /** Time a client has to reach transmission (TLS handshake included). Default 10 s, as qemu-nbd. */
  handshakeTimeoutMs?: number;
  /**
   * Concurrent connections. At the cap a new client takes the slot of, in order: one already ending,
   * the oldest still negotiating, the transmission client idle the longest with nothing in flight.
   * Only when every slot is busy is the new client turned away. Default 128.
   */
  maxConnections?: number;
  /** Idle time before TCP keepalive probes find a peer that vanished. Default 30 s. */
  keepAliveMs?: number;
  /** Grace period for close() before connections are destroyed. Default 10 s. */
  closeTimeoutMs?: number;
}

/**
 * TCP, optionally TLS-only (FORCEDTLS: nothing is served before STARTTLS), or a Unix socket file
 * created with mode (default 0600) and no moment of a wider one.
 */
export type ListenTarget = { host?: string; port: number; tls?: NbdTlsCredentials } | { path: string; mode?: number };

export class NbdServer {
  readonly #exports: NbdExport[];
  readonly #log: Logger;
  readonly #opts: Required<Omit<NbdServerOptions, 'exports' | 'logger'>>;
  readonly #servers: net.Server[] = [];
  readonly #socketFiles: SocketFile[] = [];
  readonly #connections = new Set<ServerConnection>();
  #nextConn = 1;
  #closing = false;

  constructor(opts: NbdServerOptions) {
    this.#exports = Array.isArray(opts.exports)
      ? [...(opts.exports as readonly NbdExport[])]
      : [{ name: DEFAULT_EXPORT_NAME, device: opts.exports as BlockDevice }];
    if (this.#exports.length === 0) throw new UsageError('PC_ERR_USAGE', 'NbdServer needs at least one export');
    const names = new Set(this.#exports.map((e) => e.name));
    if (names.size !== this.#exports.length) throw new UsageError('PC_ERR_USAGE', 'duplicate NBD export names');
    this.#log = opts.logger.child({ component: 'nbd-server' });
    this.#opts = {
      minimumBlockSize: opts.minimumBlockSize ?? 1,
      preferredBlockSize: opts.preferredBlockSize ?? C.NBD_DEFAULT_PREFERRED_BLOCK,
      maxPayload: opts.maxPayload ?? C.NBD_DEFAULT_MAX_PAYLOAD,
      maxInFlight: opts.maxInFlight ?? C.SERVER_MAX_IN_FLIGHT,
      maxInFlightBytes: opts.maxInFlightBytes ?? C.SERVER_MAX_IN_FLIGHT_BYTES,
      maxOptions: opts.maxOptions ?? C.SERVER_MAX_OPTIONS,
      maxOptionLength: opts.maxOptionLength ?? DEFAULT_MAX_OPTION_LENGTH,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? C.SERVER_HANDSHAKE_TIMEOUT_MS,
      maxConnections: opts.maxConnections ?? C.SERVER_MAX_CONNECTIONS,
      keepAliveMs: opts.keepAliveMs ?? C.SERVER_KEEPALIVE_MS,
      closeTimeoutMs: opts.closeTimeoutMs ?? C.SERVER_CLOSE_TIMEOUT_MS,
    };
    checkBlockSizes(this.#opts.minimumBlockSize, this.#opts.preferredBlockSize, this.#opts.maxPayload);
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Start listening; resolves with the bound address (TCP: real port when asked for 0). */
  async listen(target: ListenTarget): Promise<net.AddressInfo | string> {
    if (this.#closing) throw new UsageError('PC_ERR_USAGE', 'NbdServer is closed');
    const tls = 'port' in target && target.tls ? new TlsAcceptor(target.tls) : undefined;
    // allowHalfOpen: a client that half-closes still gets the replies to what it sent.
    // No server.maxConnections: node would turn new clients away where we make room (#accept).
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.#accept(socket, tls));
    let address: net.AddressInfo | string;
    if ('path' in target) {
      const file = await listenUnix(server, target.path, target.mode ?? DEFAULT_SOCKET_MODE);
      this.#socketFiles.push(file);
      address = target.path;
    } else {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(target.port, target.host ?? '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      address = server.address()!;
    }
    server.on('error', (err) => this.#log.error({ err }, 'NBD listener error'));
    this.#servers.push(server);
    this.#log.info({ address, tls: Boolean(tls), exports: this.#exports.map((e) => e.name) }, 'NBD server listening');
    return address;
  }

  /** Stop listening, let every connection finish what it has in flight, then close it. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const stopped = this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    const conns = [...this.#connections];
    const graceful = Promise.all(conns.map((c) => c.shutdown()));
    const late = new NbdError('NBD_ERR_CLOSED', `connections still open after ${this.#opts.closeTimeoutMs} ms at close`);
    const inTime = await withTimeout(graceful, this.#opts.closeTimeoutMs, () => late).then(
      () => true,
      (e: unknown) => {
        if (e !== late) throw e;
        return false;
      },
    );
    if (!inTime) {
      this.#log.warn({ connections: this.#connections.size }, 'NBD connections did not drain in time; destroying');
      for (const c of this.#connections) c.destroy();
    }
    await Promise.all(stopped);
    await Promise.all(this.#socketFiles.map((f) => removeSocketFile(f)));
    this.#log.info('NBD server closed');
  }

  #accept(socket: net.Socket, tls: TlsAcceptor | undefined): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (this.#connections.size >= this.#opts.maxConnections && !this.#makeRoom()) {
      this.#log.warn({ connections: this.#connections.size }, 'NBD connection cap reached with every client busy; new client turned away');
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // A client whose host vanished sends no FIN: keepalive finds it, so its slot is not held forever.
    if (socket.remoteAddress !== undefined) socket.setKeepAlive(true, this.#opts.keepAliveMs);
    const conn = new ServerConnection(socket, {
      ...(tls ? { tls } : {}),
      catalog: this.#catalog,
      logger: this.#log.child({ conn: this.#nextConn++, remote: socket.remoteAddress ?? 'unix' }),
      maxPayload: this.#opts.maxPayload,
      maxInFlight: this.#opts.maxInFlight,
      maxInFlightBytes: this.#opts.maxInFlightBytes,
      maxOptions: this.#opts.maxOptions,
      maxOptionLength: this.#opts.maxOptionLength,
      handshakeTimeoutMs: this.#opts.handshakeTimeoutMs,
    });
    this.#connections.add(conn);
    void conn.closed.then(() => this.#connections.delete(conn));
  }

  /** At the cap: evict one connection that is ending, negotiating or idle; false when all are busy. */
  #makeRoom(): boolean {
    const conns = [...this.#connections];
    const oldest = (phase: string, key: (c: ServerConnection) => number): ServerConnection | undefined =>
      conns.filter((c) => c.phase === phase && (phase !== 'transmission' || c.inFlight === 0)).sort((a, b) => key(a) - key(b))[0];
    const victim =
      oldest('ending', (c) => c.openedAt) ??
      oldest('negotiating', (c) => c.openedAt) ??
      oldest('transmission', (c) => c.lastActivity);
    if (!victim) return false;
    victim.evict(`connection cap of ${this.#opts.maxConnections} reached: making room for a new client`);
    this.#connections.delete(victim);
    return true;
  }

  readonly #catalog: ExportCatalog = {
    find: (name) => (name === '' ? this.#exports[0] : this.#exports.find((e) => e.name === name)),
    list: () => this.#exports,
    blockSizes: (exp) => this.#blockSizes(exp),
  };

  #blockSizes(exp: NbdExport): BlockSizeLimits {
    // qemu aborts when the size is not a multiple of the minimum: fall back to 1 for such a disk.
    const minimum = exp.device.size % this.#opts.minimumBlockSize === 0 ? this.#opts.minimumBlockSize : 1;
    return {
      minimum,
      preferred: Math.max(this.#opts.preferredBlockSize, minimum),
      maximum: this.#opts.maxPayload,
    };
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function checkBlockSizes(minimum: number, preferred: number, maxPayload: number): void {
  if (!isPowerOfTwo(minimum) || minimum > C.NBD_MAX_MIN_BLOCK) {
    throw new UsageError('PC_ERR_USAGE', `NBD minimum block size ${minimum} must be a power of 2 ≤ 64 KiB`);
  }
  if (!isPowerOfTwo(preferred) || preferred < Math.max(minimum, C.NBD_MIN_PREFERRED_BLOCK)) {
    throw new UsageError('PC_ERR_USAGE', `NBD preferred block size ${preferred} must be a power of 2 ≥ max(min, 512)`);
  }
  if (maxPayload < preferred || maxPayload > C.NBD_DOS_PAYLOAD) {
    throw new UsageError('PC_ERR_USAGE', `NBD max payload ${maxPayload} must be in [preferred, 64 MiB]`);
  }
}
