// The control API: HTTP/1.1 with JSON on a Unix socket only the service's user can reach (0600 from birth), or on
// the socket systemd hands over. Routes and request schemas come from schema/openapi.v1.json; the JobService answers.
import http from 'node:http';
import type { Logger } from '../common/logger.js';
import { PRIVATE_FILE_MODE } from '../common/constants.js';
import { UsageError } from '../common/errors.js';
import { listenUnix, removeSocketFile, type SocketFile } from '../nbd/socket-file.js';
import { ApiError, type JobService } from './job-types.js';
import { ControlRoutes, type Answer } from './control-routes.js';
import { OpenApiSchemas, describeSchemaError } from './openapi.js';

/** A request body larger than this is refused (413) before more of it is buffered: submits are a few hundred bytes. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** A client gets this long to send its headers, and its whole request: a stuck client cannot hold a socket forever. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** An idle kept-alive connection is closed after this long (node's default, said here). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** At close, requests still being answered (an abort waiting for its rollback) get this long before their sockets go. */
const CLOSE_GRACE_MS = 2_000;

export interface ControlApiOptions {
  /** The socket file to create (an existing path is replaced only when it is a stale socket). */
  path?: string;
  /** A listening socket handed over (systemd socket activation): its mode is the socket unit's SocketMode. */
  fd?: number;
  service: JobService;
  log: Logger;
}

export interface ControlApi {
  close(): Promise<void>;
}

export async function startControlApi(opts: ControlApiOptions): Promise<ControlApi> {
  if ((opts.path === undefined) === (opts.fd === undefined)) throw new Error('startControlApi: give exactly one of path and fd');
  const log = opts.log.child({ component: 'control-api' });
  const routes = new ControlRoutes(new OpenApiSchemas());
  const server = http.createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS },
    (req, res) => {
      void answerRequest(req, routes, opts.service, log)
        .catch((e: unknown) => errorAnswer(e, req, log))
        .then((answer) => send(res, answer, log));
    },
  );
  let socketFile: SocketFile | null = null;
  if (opts.fd !== undefined) {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd: opts.fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // The socket's file mode is the API's only access control: a TCP socket handed over would let anyone in. (A Unix
    // socket adopted by fd has no address node can name: null; a TCP one has its host and port.)
    const address = server.address();
    if (typeof address === 'object' && address !== null) {
      server.close();
      throw new UsageError('PC_ERR_USAGE', `the control socket handed over (fd ${opts.fd}) is not a Unix socket: the control API is served on a Unix socket only (its mode decides who may drive the service)`);
    }
  } else {
    // Bound in a fresh 0700 directory beside the path, chmod 0600, then linked into place (listenUnix): the socket
    // is never reachable at a wider mode. A umask around listen() would leave no window either, but the umask is
    // process-wide: a job writing its files at that moment would get the wrong mode.
    socketFile = await listenUnix(server, opts.path!, PRIVATE_FILE_MODE, '--control');
  }
  log.info({ control: opts.path ?? `fd ${opts.fd}` }, 'control API listening');
  return {
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(grace);
      if (socketFile) await removeSocketFile(socketFile);
    },
  };
}

/** Route, check the body against the document, ask the service. Every refusal is thrown as an ApiError. */
async function answerRequest(req: http.IncomingMessage, routes: ControlRoutes, service: JobService, log: Logger): Promise<Answer> {
  const pathname = (req.url ?? '/').split('?')[0]!;
  const match = routes.match(req.method ?? 'GET', pathname);
  switch (match.kind) {
    case 'no-route':
      throw new ApiError(404, 'not_found', `no such route: ${pathname}`);
    case 'method-not-allowed':
      return { ...errorBody(405, 'method_not_allowed', `${pathname} takes ${match.allow.join(', ')}, not ${req.method}`), headers: { Allow: match.allow.join(', ') } };
    case 'no-such-job':
      throw new ApiError(404, 'not_found', `no job '${match.id}'`);
  }
  const { operation, id } = match;
  let body: unknown;
  if (operation.body) {
    body = parseJson(await readBody(req));
    if (!operation.body(body)) throw new ApiError(400, 'invalid_request', describeSchemaError(operation.body.errors));
  }
  log.debug({ op: operation.operationId, id }, 'control API request');
  return await operation.handler(service, id, body);
}

/** The body, refused unless declared JSON and at most MAX_BODY_BYTES; a declared length over the cap is refused unread. */
async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new ApiError(415, 'unsupported_media_type', `the body must be application/json${type ? `, not ${type}` : ''}`);
  const tooLarge = () => new ApiError(413, 'payload_too_large', `the body is over ${MAX_BODY_BYTES} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  // Events, not for-await: leaving a for-await loop destroys the socket, and the client would never read the 413.
  return await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      chunks.length = 0;
      reject(tooLarge());
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function parseJson(raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new ApiError(400, 'invalid_json', `the body is not JSON: ${(e as Error).message}`);
  }
}

function errorBody(status: number, code: string, message: string): Answer {
  return { status, body: { error: { code, message } } };
}

/** An ApiError is the client's answer; anything else is our bug: logged with its stack, the client told only that. */
function errorAnswer(e: unknown, req: http.IncomingMessage, log: Logger): Answer {
  if (e instanceof ApiError && e.status >= 400 && e.status <= 599) return errorBody(e.status, e.code, e.message);
  log.error({ err: e, method: req.method, url: req.url }, 'control API: request failed');
  return errorBody(500, 'internal', "internal error (the service's log says more)");
}

function send(res: http.ServerResponse, answer: Answer, log: Logger): void {
  if (res.headersSent || res.destroyed) return;
  let text: string | undefined;
  try {
    text = answer.body === undefined ? undefined : JSON.stringify(answer.body);
  } catch (e) {
    // A status the service cannot have meant (a BigInt, a cycle): our bug, answered like any other.
    answer = errorAnswer(e, res.req, log);
    text = JSON.stringify(answer.body);
  }
  const req = res.req;
  // A body not read (or not read to its end: refused) is drained by node after the answer, within the request
  // timeout, so the connection stays in step and the client reads this answer instead of a reset.
  if (!req.complete) req.resume();
  const headers: Record<string, string | number> = { ...answer.headers };
  if (text === undefined) {
    res.writeHead(answer.status, headers).end();
    return;
  }
  headers['Content-Type'] = 'application/json';
  headers['Content-Length'] = Buffer.byteLength(text);
  res.writeHead(answer.status, headers).end(text);
}
