// Opening the migration socket from S, with retry and capped exponential backoff.
import { connect, type Socket } from 'node:net';
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

/** One TCP connection attempt with a deadline. */
export function connectOnce(ep: Endpoint, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: ep.host, port: ep.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new TimeoutError('PC_ERR_TIMEOUT', `connecting to ${ep.host}:${ep.port}`));
    }, timeoutMs);
    sock.once('connect', () => {
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
  opts: { deadline: number; backoff: Backoff; onRetry?: (attempt: number, err: Error, delayMs: number) => void },
): Promise<Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connectOnce(ep, 5000);
    } catch (e) {
      const delay = backoffDelay(attempt, opts.backoff);
      if (Date.now() + delay > opts.deadline) throw e;
      opts.onRetry?.(attempt, e as Error, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
