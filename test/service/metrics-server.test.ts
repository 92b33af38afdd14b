// The metrics endpoint over real sockets: its routes, its refusal to serve plain HTTP off loopback (by address
// and by a socket handed in as an fd), and mutual TLS with the service's certificate.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import type { TlsFiles } from '../../src/link/connect.js';
import { METRIC, ServiceMetrics } from '../../src/service/metrics.js';
import { startMetricsServer, type MetricsServer } from '../../src/service/metrics-server.js';
import { jobStatus, makeTestPki, parseExposition, valueOf } from './metrics-fixtures.js';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

interface ClientTls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

function call(port: number, path: string, method = 'GET', tls?: ClientTls): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, path, method, agent: false as const };
    const req = tls ? httpsRequest({ ...opts, ...tls }) : httpRequest(opts);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const metrics = new ServiceMetrics(() => [jobStatus({ id: 'j1', dataTotalBytes: 100, dataProcessedBytes: 42, dataRemainingBytes: 58 })]);

async function start(opts: Partial<Parameters<typeof startMetricsServer>[0]> = {}): Promise<MetricsServer> {
  const s = await startMetricsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, log: silentLogger(), ...opts });
  servers.push(s);
  return s;
}

/** Whether something accepts connections on host:port. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// A bound TCP socket that nothing in this process polls, standing for the one systemd passes (LISTEN_FDS): the
// server adopts its fd. Kept referenced to the end, so its wrapper never closes an fd number reused since.
const passedSockets: unknown[] = [];
function boundSocketFd(host: string): { fd: number; port: number } {
  const { TCP, constants } = (process as unknown as { binding(name: string): { TCP: new (kind: number) => TcpHandle; constants: { SERVER: number } } }).binding('tcp_wrap');
  const h = new TCP(constants.SERVER);
  const rc = h.bind(host, 0);
  if (rc !== 0) throw new Error(`bind ${host}: ${rc}`);
  const name: { port?: number } = {};
  h.getsockname(name);
  passedSockets.push(h);
  return { fd: h.fd, port: name.port! };
}
interface TcpHandle {
  bind(host: string, port: number): number;
  getsockname(out: object): number;
  fd: number;
}

describe('the metrics server', () => {
  it('serves GET and HEAD /metrics in the registry content type; 404 elsewhere, 405 for other methods', async () => {
    const { address } = await start();
    expect(address.host).toBe('127.0.0.1');
    const got = await call(address.port, '/metrics');
    expect(got.status).toBe(200);
    expect(got.headers['content-type']).toBe(metrics.registry.contentType);
    expect(valueOf(parseExposition(got.body), METRIC.dataProcessed, { job_id: 'j1' })).toBe(42);
    expect((await call(address.port, '/metrics?name[]=x')).status).toBe(200);
    const head = await call(address.port, '/metrics', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    for (const path of ['/', '/metric', '/metrics/', '/v1/jobs']) expect((await call(address.port, path)).status).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await call(address.port, '/metrics', method);
      expect(r.status).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD');
    }
  });

  it('answers 500 (and keeps serving) when collecting fails', async () => {
    let fail = true;
    const flaky = new ServiceMetrics(() => {
      if (fail) throw new Error('registry gone');
      return [];
    });
    const { address } = await start({ metrics: flaky });
    expect((await call(address.port, '/metrics')).status).toBe(500);
    fail = false;
    expect((await call(address.port, '/metrics')).status).toBe(200);
  });

  it('refuses plain HTTP off loopback with a UsageError before listening; localhost and ::1 are fine', async () => {
    for (const host of ['0.0.0.0', '::', '192.0.2.1']) {
      const err = await start({ listen: { host, port: 0 } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).code).toBe('PC_ERR_USAGE');
      expect((err as Error).message).toMatch(/reachable from other hosts.*TLS.*nothing was started/);
    }
    // Nothing bound: the port asked for is still free.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '0.0.0.0', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await expect(start({ listen: { host: '0.0.0.0', port } })).rejects.toBeInstanceOf(UsageError);
    expect(await answers('127.0.0.1', port)).toBe(false);

    const local = await start({ listen: { host: 'localhost', port: 0 } });
    expect((await call(local.address.port, '/metrics')).status).toBe(200);
    const six = await start({ listen: { host: '::1', port: 0 } });
    expect(six.address.host).toBe('::1');
  });

  it('adopts a socket passed by fd, and refuses one bound off loopback without TLS', async () => {
    const ok = boundSocketFd('127.0.0.1');
    const s = await start({ listen: undefined, fd: ok.fd });
    expect(s.address).toEqual({ host: '127.0.0.1', port: ok.port });
    expect((await call(ok.port, '/metrics')).status).toBe(200);

    const wide = boundSocketFd('0.0.0.0');
    const err = await start({ listen: undefined, fd: wide.fd }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/fd \d+ \(0\.0\.0\.0:\d+\) is reachable from other hosts/);
    expect(await answers('127.0.0.1', wide.port)).toBe(false);
  });

  it('says which address it could not take', async () => {
    const first = await start();
    const err = await start({ listen: first.address }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/--metrics-listen 127\.0\.0\.1:\d+: cannot listen \(EADDRINUSE/);
  });

  describe('with TLS', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-metrics-tls-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const { file } = makeTestPki(dir);
    const read = (n: string) => readFileSync(file(n));
    const serverTls: TlsFiles = { cert: read('server.crt'), key: read('server.key'), ca: read('ca.crt') };

    it('listens off loopback and serves a client whose certificate the CA signed; refuses others', async () => {
      const { address } = await start({ listen: { host: '0.0.0.0', port: 0 }, tls: serverTls });
      const got = await call(address.port, '/metrics', 'GET', { ca: read('ca.crt'), cert: read('client.crt'), key: read('client.key') });
      expect(got.status).toBe(200);
      expect(valueOf(parseExposition(got.body), METRIC.dataTotal, { job_id: 'j1' })).toBe(100);
      await expect(call(address.port, '/metrics', 'GET', { ca: read('ca.crt') })).rejects.toThrow();
      await expect(call(address.port, '/metrics', 'GET', { ca: read('ca.crt'), cert: read('stranger.crt'), key: read('stranger.key') })).rejects.toThrow();
      await expect(call(address.port, '/metrics')).rejects.toThrow();
    });
  });
});
