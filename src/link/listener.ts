// The migration port of a destination: a TCP (or mutual-TLS) server, the registry of its sockets, and the
// cap on connections still authenticating, so strangers cost at most a few small handshakes at once.
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { BusyError, type PostcopyError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { MAX_PREAUTH_CONNECTIONS } from '../protocol/constants.js';
import type { Endpoint, TlsFiles } from './connect.js';
import { refuseConnection } from './link.js';

export interface ListenerOptions {
  listen: Endpoint;
  /** Mutual TLS: a peer without a certificate from this CA is refused. */
  tls?: TlsFiles;
  log: Logger;
  events: EventSink;
}

/** Where a MigrationListener takes connections: an address to bind, or a listening socket it is handed (systemd's). */
export type ServerOptions = Omit<ListenerOptions, 'listen'> & ({ listen: Endpoint; fd?: undefined } | { fd: number; listen?: Endpoint });

/** A connection let in: `authenticated()` must be called once its handshake settled (either way). */
export type OnConnection = (socket: Socket, peer: string, authenticated: () => void) => void;

/** What an agent needs of its listener (tests may inject another). */
export interface DestListener {
  listen(): Promise<Endpoint>;
  close(): void;
}

export type ListenerFactory = (opts: ListenerOptions, onConnection: OnConnection) => DestListener;

export class MigrationListener implements DestListener {
  readonly #o: ServerOptions;
  readonly #onConnection: OnConnection;
  readonly #sockets = new Set<Socket>();
  #server: Server | null = null;
  #authenticating = 0;

  constructor(opts: ServerOptions, onConnection: OnConnection) {
    this.#o = opts;
    this.#onConnection = onConnection;
  }

  /** Bind and listen (or adopt the listening fd); resolves with the bound address (port 0 picks one). */
  async listen(): Promise<Endpoint> {
    const tls = this.#o.tls;
    const server = tls
      ? createTlsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (s) => this.#accept(s))
      : createServer((s) => this.#accept(s));
    if (tls) {
      server.on('tlsClientError', (err, sock) => {
        const peer = `${sock.remoteAddress}:${sock.remotePort}`;
        this.#o.log.warn({ err: err.message, peer }, 'refused a TLS connection');
        this.#o.events.emit('refused', { peer, code: 'TLS', message: err.message });
      });
    }
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const listening = () => {
        server.off('error', reject);
        resolve();
      };
      if (this.#o.fd !== undefined) server.listen({ fd: this.#o.fd }, listening);
      else server.listen(this.#o.listen.port, this.#o.listen.host, listening);
    });
    server.on('error', (err) => this.#o.log.error({ err }, 'listener error'));
    const addr = server.address();
    if (typeof addr === 'object' && addr) return { host: addr.address, port: addr.port };
    // An adopted Unix socket has a path for an address, and no port.
    return this.#o.listen ?? { host: addr ?? '', port: 0 };
  }

  /** Stop listening and drop every connection. */
  close(): void {
    this.#server?.close();
    for (const s of this.#sockets) s.destroy();
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.#authenticating >= MAX_PREAUTH_CONNECTIONS) {
      // The real source retries; a flood of strangers gets no more than this.
      const err = new BusyError('PC_ERR_BUSY', `${this.#authenticating} connections are already authenticating; try again`);
      refuseStranger(this.#o, socket, peer, err, 'refused a connection: too many authenticating');
      return;
    }
    this.#authenticating++;
    let settled = false;
    this.#onConnection(socket, peer, () => {
      if (settled) return;
      settled = true;
      this.#authenticating--;
    });
  }
}

/** Cut a peer off before it authenticated: an ERROR frame, one log line and a `refused` event. */
export function refuseStranger(o: { log: Logger; events: EventSink }, socket: Socket, peer: string, err: PostcopyError, msg = 'refused a connection'): void {
  o.log.child({ peer }).warn({ code: err.code, err: err.message }, msg);
  o.events.emit('refused', { peer, code: err.code, message: err.message });
  refuseConnection(socket, err);
}
