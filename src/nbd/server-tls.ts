// The server side of NBD_OPT_STARTTLS: turns an accepted TCP socket into a TLS one after the STARTTLS
// ACK, with x509 credentials as qemu-nbd's --tls-creds (a CA given: clients must present a certificate it signed).
import type net from 'node:net';
import tls from 'node:tls';

export interface NbdTlsCredentials {
  cert: Buffer;
  key: Buffer;
  /** When set, a client must present a certificate this CA signed (qemu's verify-peer). */
  ca?: Buffer;
}

/** What a connection needs to upgrade its socket; the server owns one for all its TCP connections. */
export interface TlsUpgrader {
  /** Resolves with the TLS socket once the handshake (and client verification) succeeded; rejects otherwise. */
  upgrade(raw: net.Socket): Promise<tls.TLSSocket>;
}

/**
 * Uses a tls.Server that never listens: handing it the raw socket as a 'connection' gets node's own
 * server-side chain verification (`authorized`) that a bare TLSSocket would skip. Its events name the
 * TLS socket only, so the pending upgrade is found by the TCP 4-tuple, unique among live connections.
 * The server does not reject by itself (a destroyed socket no longer has its 4-tuple): we check
 * `authorized` and say why a certificate was refused.
 */
export class TlsAcceptor implements TlsUpgrader {
  readonly #server: tls.Server;
  readonly #pending = new Map<string, { resolve: (s: tls.TLSSocket) => void; reject: (e: Error) => void }>();

  constructor(creds: NbdTlsCredentials) {
    const verify = creds.ca !== undefined;
    this.#server = tls.createServer({
      cert: creds.cert,
      key: creds.key,
      ...(verify ? { ca: creds.ca } : {}),
      requestCert: verify,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    });
    this.#server.on('secureConnection', (s: tls.TLSSocket) => {
      const refused = verify && !s.authorized ? new Error(`client certificate refused: ${s.authorizationError ?? 'none presented'}`) : undefined;
      this.#settle(s, refused);
    });
    this.#server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => this.#settle(s, err));
  }

  upgrade(raw: net.Socket): Promise<tls.TLSSocket> {
    const key = tupleOf(raw);
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject };
      this.#pending.set(key, entry);
      // The peer may hang up mid-handshake without a TLS error being reported (only this entry: a
      // later connection may reuse the 4-tuple).
      raw.once('close', () => {
        if (this.#pending.get(key) !== entry) return;
        this.#pending.delete(key);
        reject(new Error('connection closed during the TLS handshake'));
      });
      this.#server.emit('connection', raw);
    });
  }

  #take(key: string): { resolve: (s: tls.TLSSocket) => void; reject: (e: Error) => void } | undefined {
    const p = this.#pending.get(key);
    this.#pending.delete(key);
    return p;
  }

  #settle(s: tls.TLSSocket, err: Error | undefined): void {
    // Unknown (a socket already destroyed has lost its addresses): the raw socket's 'close' rejects it.
    const p = this.#take(tupleOf(s));
    if (err || !p) s.destroy();
    if (!p) return;
    if (err) p.reject(err);
    else p.resolve(s);
  }
}

function tupleOf(s: net.Socket): string {
  return `${s.localAddress}:${s.localPort}-${s.remoteAddress}:${s.remotePort}`;
}
