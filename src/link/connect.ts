// Reaching D from S: one TCP (or mutual-TLS) connection attempt, and one attempt at a migration link with its
// handshake. Retrying is not done here: S's session core owns it (one attempt per `connect` effect).
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { LinkClosedError, TimeoutError, UsageError, type PostcopyError, toPostcopyError } from '../common/errors.js';
import { withTimeout } from '../common/retry.js';
import type { Ticket } from '../protocol/handshake.js';
import { handshakeAsSource, type HandshakeResult, type SessionKeys } from './handshake.js';
import { Link, type LinkOptions } from './link.js';

export interface Endpoint {
  host: string;
  port: number;
}

export function parseHostPort(text: string, what: string): Endpoint {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new UsageError('PC_ERR_USAGE', `${what} must be HOST:PORT, got '${text}'`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Mutual TLS on the migration socket: our certificate and key, and the CA that signed the peer's. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export function loadTlsFiles(cert: string | undefined, key: string | undefined, ca: string | undefined): TlsFiles | undefined {
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key || !ca) throw new UsageError('PC_ERR_USAGE', '--tls-cert, --tls-key and --tls-ca go together (mutual TLS)');
  const read = (p: string, what: string) => {
    try {
      return readFileSync(p);
    } catch (e) {
      throw new UsageError('PC_ERR_USAGE', `cannot read ${what} ${p}: ${(e as Error).message}`);
    }
  };
  return { cert: read(cert, '--tls-cert'), key: read(key, '--tls-key'), ca: read(ca, '--tls-ca') };
}

/** One TCP (or TLS) connection attempt with a time limit. */
export async function connectOnce(ep: Endpoint, timeoutMs: number, tls?: TlsFiles): Promise<Socket | TLSSocket> {
  const sock = tls
    ? tlsConnect({ host: ep.host, port: ep.port, cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: 'TLSv1.2', rejectUnauthorized: true })
    : connect({ host: ep.host, port: ep.port });
  const ready = new Promise<Socket | TLSSocket>((resolve, reject) => {
    sock.once(tls ? 'secureConnect' : 'connect', () => {
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (err) => reject(new LinkClosedError('PC_ERR_LINK_CLOSED', `connect ${ep.host}:${ep.port}: ${err.message}`, { cause: err })));
  });
  try {
    return await withTimeout(ready, timeoutMs, () => new TimeoutError('PC_ERR_TIMEOUT', `connecting to ${ep.host}:${ep.port}`));
  } catch (e) {
    sock.destroy();
    throw e;
  }
}

/** Why one attempt at a migration link failed: the socket did not open, or D turned the handshake down. */
export class ConnectAttemptError extends Error {
  constructor(
    readonly stage: 'socket' | 'handshake',
    readonly error: PostcopyError,
  ) {
    super(error.message, { cause: error });
  }
}

export interface LinkAttempt {
  endpoint: Endpoint;
  deadline: number;
  /** Opens the socket (tests wrap it in fault layers); the default is connectOnce with TLS if given. */
  openSocket: (ep: Endpoint, deadline: number) => Promise<Duplex>;
  ticket: Ticket | null;
  /** The session to resume, or null for a new one. */
  resume: SessionKeys | null;
  link: LinkOptions;
}

/** One attempt: open the socket, wrap it in a Link, authenticate (resuming a session if asked). */
export async function attemptLink(a: LinkAttempt): Promise<{ link: Link; hs: HandshakeResult }> {
  const asLinkError = (e: unknown) => toPostcopyError(e, (d, o) => new LinkClosedError('PC_ERR_LINK_CLOSED', d, o));
  let socket: Duplex;
  try {
    socket = await a.openSocket(a.endpoint, a.deadline);
  } catch (e) {
    throw new ConnectAttemptError('socket', asLinkError(e));
  }
  const link = new Link(socket, a.link);
  try {
    return { link, hs: await handshakeAsSource(link, a.ticket, a.resume) };
  } catch (e) {
    link.destroy();
    throw new ConnectAttemptError('handshake', asLinkError(e));
  }
}
