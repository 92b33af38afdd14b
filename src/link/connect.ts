// Opening the migration socket from S, with retry and capped exponential backoff.
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { LinkClosedError, TimeoutError, UsageError } from '../common/errors.js';

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

/** One TCP (or TLS) connection attempt with a deadline. */
export function connectOnce(ep: Endpoint, timeoutMs: number, tls?: TlsFiles): Promise<Socket | TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = tls
      ? tlsConnect({ host: ep.host, port: ep.port, cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: 'TLSv1.2', rejectUnauthorized: true })
      : connect({ host: ep.host, port: ep.port });
    const ready = tls ? 'secureConnect' : 'connect';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new TimeoutError('PC_ERR_TIMEOUT', `connecting to ${ep.host}:${ep.port}`));
    }, timeoutMs);
    sock.once(ready, () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(new LinkClosedError('PC_ERR_LINK_CLOSED', `connect ${ep.host}:${ep.port}: ${err.message}`, { cause: err }));
    });
  });
}

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/** Delay before attempt n (0-based): doubling from initialMs, capped, with ±25% jitter so peers don't lock-step. */
export function backoffDelay(attempt: number, b: Backoff): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** Keep trying until connected or `deadline` (ms since epoch; Infinity to try forever). */
export async function connectWithRetry(
  ep: Endpoint,
  opts: { deadline: number; backoff: Backoff; tls?: TlsFiles; onRetry?: (attempt: number, err: Error, delayMs: number) => void },
): Promise<Socket | TLSSocket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connectOnce(ep, 5000, opts.tls);
    } catch (e) {
      const delay = backoffDelay(attempt, opts.backoff);
      if (Date.now() + delay > opts.deadline) throw e;
      opts.onRetry?.(attempt, e as Error, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
