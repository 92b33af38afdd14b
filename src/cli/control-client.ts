// The CLI clients' side of the control API: one JSON request over the service's Unix socket, answered with the
// API's status and body, or with why no service answered (never thrown: each command says it in one line).
import http from 'node:http';

/** Where `postcopy serve` listens unless told otherwise (the systemd socket unit's path too). */
export const DEFAULT_CONTROL_PATH = '/run/postcopy/control.sock';

/** A request other than abort (which waits for a rollback) gets this long: the service answers them at once. */
export const CONTROL_REQUEST_TIMEOUT_MS = 30_000;

export type ApiReply = { kind: 'reply'; status: number; body: unknown } | { kind: 'unreachable'; line: string };

export interface ApiErrorBody {
  error: { code: string; message: string };
}

export function isApiErrorBody(body: unknown): body is ApiErrorBody {
  const e = (body as ApiErrorBody | null)?.error;
  return typeof e === 'object' && e !== null && typeof e.code === 'string' && typeof e.message === 'string';
}

/** One request; `timeoutMs` null waits as long as the service takes. */
export function callApi(socketPath: string, method: string, path: string, body?: unknown, timeoutMs: number | null = CONTROL_REQUEST_TIMEOUT_MS): Promise<ApiReply> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> = payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) };
  return new Promise((resolve) => {
    const req = http.request({ socketPath, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = undefined;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          parsed = { error: { code: 'not_json', message: `the service answered ${res.statusCode} with a body that is not JSON` } };
        }
        resolve({ kind: 'reply', status: res.statusCode ?? 0, body: parsed });
      });
      res.on('error', (e) => resolve({ kind: 'unreachable', line: `the answer from ${socketPath} broke off: ${e.message}` }));
    });
    if (timeoutMs !== null) {
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })));
    }
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ kind: 'unreachable', line: unreachableLine(socketPath, e) }));
    req.end(payload);
  });
}

/** Why no service answered, and what to do about it. */
function unreachableLine(socketPath: string, e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOENT':
      return `no control socket at ${socketPath}: is 'postcopy serve' running? (--control PATH names another socket)`;
    case 'ECONNREFUSED':
      return `nothing answers on ${socketPath} (a socket left by a service that is gone?): is 'postcopy serve' running?`;
    case 'EACCES':
      return `permission denied on ${socketPath}: the control socket is its service's user's alone (mode 0600); run as that user`;
    case 'ETIMEDOUT':
      return `the service on ${socketPath} did not answer: ${e.message}`;
    default:
      return `cannot reach the service on ${socketPath}: ${e.message}`;
  }
}
