// The service's Prometheus endpoint: GET /metrics over HTTP on loopback, or over mutual TLS (the service's own
// certificate, client certificates from its CA) anywhere else; a socket systemd passes in is held to the same rule.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import net from 'node:net';
import { UsageError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { isLoopback, onlyLoopback } from '../common/loopback.js';
import type { Endpoint, TlsFiles } from '../link/connect.js';
import type { ServiceMetrics } from './metrics.js';

export interface MetricsServerOptions {
  /** Where to listen (--metrics-listen); ignored when `fd` is given. */
  listen?: Endpoint;
  /** A listening socket already bound (systemd socket activation). */
  fd?: number;
  /** Mutual TLS: required off loopback. */
  tls?: TlsFiles;
  metrics: ServiceMetrics;
  log: Logger;
}

export interface MetricsServer {
  /** The bound address (a socket passed in by fd whose address is a path: host is that path, port 0). */
  address: Endpoint;
  close(): Promise<void>;
}

const METRICS_PATH = '/metrics';
const ALLOWED_METHODS = 'GET, HEAD';

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { tls, log } = opts;
  if (opts.fd === undefined) {
    if (!opts.listen) throw new UsageError('PC_ERR_USAGE', 'the metrics server needs an address or a socket (fd)');
    if (!tls) await refuseOffLoopback(opts.listen);
  }
  const handler = (req: IncomingMessage, res: ServerResponse) => void serve(req, res, opts);
  const server: Server = tls
    ? createHttpsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, handler)
    : createHttpServer(handler);
  if (tls) {
    server.on('tlsClientError', (err, sock) => log.warn({ err: err.message, peer: `${sock.remoteAddress}:${sock.remotePort}` }, 'metrics: refused a TLS connection'));
  }
  const address = await listen(server, opts);
  server.on('error', (err) => log.error({ err }, 'metrics server error'));
  log.info({ address: `${address.host}:${address.port}`, tls: Boolean(tls) }, `metrics at ${tls ? 'https' : 'http'}://${hostPort(address)}${METRICS_PATH}`);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Prometheus keeps its connection alive between scrapes: without this, close() would wait for it to idle out.
        server.closeAllConnections();
      }),
  };
}

async function serve(req: IncomingMessage, res: ServerResponse, opts: MetricsServerOptions): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path !== METRICS_PATH) return reply(res, 404, `not found: the metrics are at ${METRICS_PATH}\n`);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', ALLOWED_METHODS);
    return reply(res, 405, `${req.method} not allowed: ${ALLOWED_METHODS}\n`);
  }
  let text: string;
  try {
    text = await opts.metrics.metricsText();
  } catch (err) {
    opts.log.error({ err }, 'metrics: collecting failed');
    return reply(res, 500, 'collecting the metrics failed\n');
  }
  res.writeHead(200, { 'Content-Type': opts.metrics.registry.contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(req.method === 'HEAD' ? undefined : text);
}

function reply(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** Binds (or adopts the fd); a passed-in socket off loopback without TLS is closed before it serves anyone. */
function listen(server: Server, opts: MetricsServerOptions): Promise<Endpoint> {
  return new Promise<Endpoint>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => reject(listenFailure(err, opts));
    server.once('error', failed);
    const onListening = () => {
      server.off('error', failed);
      // Runs before the first connection is accepted (the 'listening' callback comes on nextTick, accepts on poll).
      const addr = server.address();
      const address = typeof addr === 'string' ? { host: addr, port: 0 } : { host: addr!.address, port: addr!.port };
      if (opts.fd !== undefined && !opts.tls && typeof addr !== 'string' && !isLoopback(address.host)) {
        server.close();
        reject(offLoopback(`the socket passed as fd ${opts.fd} (${hostPort(address)})`));
        return;
      }
      resolve(address);
    };
    if (opts.fd !== undefined) server.listen({ fd: opts.fd }, onListening);
    else server.listen(opts.listen!.port, opts.listen!.host, onListening);
  });
}

function listenFailure(err: NodeJS.ErrnoException, opts: MetricsServerOptions): Error {
  const where = opts.fd !== undefined ? `fd ${opts.fd}` : hostPort(opts.listen!);
  if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL' || err.code === 'EBADF' || err.code === 'ENOTSOCK') {
    return new UsageError('PC_ERR_USAGE', `--metrics-listen ${where}: cannot listen (${err.code}: ${err.message})`, { cause: err });
  }
  return err;
}

/** The metrics name every job and their sizes: outside this host only over mutual TLS. */
async function refuseOffLoopback(ep: Endpoint): Promise<void> {
  if (await onlyLoopback(ep.host, '--metrics-listen')) return;
  throw offLoopback(`--metrics-listen ${hostPort(ep)}`);
}

function offLoopback(what: string): UsageError {
  return new UsageError(
    'PC_ERR_USAGE',
    `${what} is reachable from other hosts: metrics off loopback are served only over TLS (add --tls-cert, --tls-key and --tls-ca; Prometheus then scrapes with a client certificate from that CA), or listen on 127.0.0.1; nothing was started`,
  );
}

function hostPort(ep: Endpoint): string {
  return net.isIPv6(ep.host) ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
}
