// One migration port for every incoming migration of a host: each accepted socket goes, by the ticket id in its
// HELLO, to the dest job holding that ticket, which runs the real handshake on it. Strangers are cut off here.
import type { Socket } from 'node:net';
import { BusyError, ProtocolError, UsageError, isPostcopyError, type PostcopyError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { Endpoint, TlsFiles } from '../link/connect.js';
import { LINK_HANDSHAKE_TIMEOUT_MS } from '../link/constants.js';
import { MigrationListener, refuseStranger, type DestListener, type ListenerFactory, type OnConnection, type ServerOptions } from '../link/listener.js';
import type { MessageOf } from '../protocol/messages.js';
import { readFirstHello } from './first-hello.js';

export interface MigrationPortOptions {
  /** Address to bind; or `fd`, a listening socket handed over (systemd socket activation). */
  listen?: Endpoint;
  fd?: number;
  /** Mutual TLS, as on a standalone destination. */
  tls?: TlsFiles;
  log: Logger;
  events: EventSink;
  /** How long a new connection may take to send its HELLO (default: the link's whole-handshake budget). */
  handshakeTimeoutMs?: number;
}

/** A dest job's place on the port: who takes its connections, and the sockets it was given. */
interface Registration {
  onConnection: OnConnection;
  sockets: Set<Socket>;
}

export class SharedMigrationPort {
  readonly #o: MigrationPortOptions;
  readonly #server: MigrationListener;
  readonly #jobs = new Map<string, Registration>();
  #address: Endpoint | null = null;
  #closed = false;

  constructor(opts: MigrationPortOptions) {
    this.#o = opts;
    const where = serverOptions(opts);
    this.#server = new MigrationListener(where, (socket, peer, settled) => this.#route(socket, peer, settled));
  }

  get registeredTickets(): number {
    return this.#jobs.size;
  }

  /** Bind (or adopt the fd) and listen; resolves with the bound address. */
  async listen(): Promise<Endpoint> {
    this.#address = await this.#server.listen();
    return this.#address;
  }

  /** Stop listening and drop every connection, the jobs' included. */
  close(): void {
    this.#closed = true;
    this.#server.close();
    this.#jobs.clear();
    this.#address = null;
  }

  /**
   * A DestAgentOptions.listener for the dest job with this ticket: its listen() registers (and resolves with the
   * port's address), close() unregisters and drops the connections it was given. The agent's own `listen` and
   * `tls` are not used: the port's are.
   */
  listenerFor(ticketId: string): ListenerFactory {
    return (_opts, onConnection): DestListener => {
      const reg: Registration = { onConnection, sockets: new Set() };
      return {
        listen: async () => {
          if (this.#address === null) throw new UsageError('PC_ERR_USAGE', 'the shared migration port is not listening');
          if (this.#jobs.has(ticketId)) throw new UsageError('PC_ERR_USAGE', `another job on this host already holds ticket ${ticketId}`);
          this.#jobs.set(ticketId, reg);
          return this.#address;
        },
        close: () => {
          // A job closed late must not unregister whoever holds the ticket now.
          if (this.#jobs.get(ticketId) === reg) this.#jobs.delete(ticketId);
          for (const s of reg.sockets) s.destroy();
        },
      };
    };
  }

  #route(socket: Socket, peer: string, settled: () => void): void {
    readFirstHello(socket, this.#o.handshakeTimeoutMs ?? LINK_HANDSHAKE_TIMEOUT_MS).then(
      ({ hello, bytes }) => {
        const reg = this.#jobFor(hello);
        if (isPostcopyError(reg)) {
          this.#refuse(socket, peer, reg, settled);
          return;
        }
        reg.sockets.add(socket);
        socket.once('close', () => reg.sockets.delete(socket));
        // The job's handshake reads the HELLO again, as if it had been the first to see the socket.
        socket.unshift(bytes);
        reg.onConnection(socket, peer, settled);
      },
      (err: PostcopyError) => this.#refuse(socket, peer, err, settled),
    ).catch((e: unknown) => {
      // A handover that threw (settled is idempotent): the peer goes, the port goes on.
      this.#o.log.child({ peer }).error({ err: e }, 'could not hand a connection to its job');
      socket.destroy();
      settled();
    });
  }

  /** The job this HELLO is for, or why there is none. */
  #jobFor(hello: MessageOf<'HELLO'>): Registration | PostcopyError {
    if (hello.ticketId !== undefined) {
      // Not yet submitted, queued, or over: a source may try again (a stranger learns nothing it did not send).
      return this.#jobs.get(hello.ticketId) ?? new BusyError('PC_ERR_BUSY', 'no migration on this port holds that ticket now; try again');
    }
    // A source older than ticket ids: routable only while it cannot be mistaken.
    if (this.#jobs.size === 1) return [...this.#jobs.values()][0]!;
    if (this.#jobs.size === 0) return new BusyError('PC_ERR_BUSY', 'no migration on this port now; try again');
    return new ProtocolError('PC_ERR_VERSION', `HELLO names no ticket and ${this.#jobs.size} migrations share this port: the source is too old for it`);
  }

  #refuse(socket: Socket, peer: string, err: PostcopyError, settled: () => void): void {
    // Connections the port's own close cut are nobody's refusal.
    if (this.#closed) socket.destroy();
    else refuseStranger(this.#o, socket, peer, err);
    settled();
  }
}

function serverOptions(o: MigrationPortOptions): ServerOptions {
  const common = { log: o.log, events: o.events, ...(o.tls ? { tls: o.tls } : {}) };
  if (o.fd !== undefined) return { ...common, fd: o.fd, ...(o.listen ? { listen: o.listen } : {}) };
  if (o.listen) return { ...common, listen: o.listen };
  throw new UsageError('PC_ERR_USAGE', 'the migration port needs an address to listen on or a listening fd');
}
