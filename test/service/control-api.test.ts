// The control API answers as schema/openapi.v1.json says: every route, every documented status, each answer checked
// against the document (an undocumented status or a body off its schema fails), on a real Unix socket with an
// in-memory JobService. Bodies the document refuses never reach the service; its bugs never reach the client.
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_BODY_BYTES, startControlApi, type ControlApi } from '../../src/service/control-api.js';
import { ApiError } from '../../src/service/job-types.js';
import { FakeJobService, jobStatus } from '../helpers/fake-job-service.js';
import { apiRequest, OpenApiChecker, type RequestOptions } from '../helpers/openapi-check.js';

const checker = new OpenApiChecker();
const dir = mkdtempSync(join(tmpdir(), 'control-api-'));
const sock = join(dir, 'control.sock');
let service: FakeJobService;
let api: ControlApi;
let logLines: string[];

beforeEach(async () => {
  service = new FakeJobService();
  logLines = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logLines.push(s) });
  api = await startControlApi({ path: sock, service, log });
});
afterEach(async () => api.close());
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  // Every answer the document names was seen (the tests are spread over the describe blocks below).
  expect(checker.missing()).toEqual([]);
});

/** A request whose answer must be as documented; returns the status and the parsed body. */
async function call(method: string, path: string, body?: unknown, o?: RequestOptions): Promise<{ status: number; body: any; headers: http.IncomingHttpHeaders }> {
  const a = await apiRequest(sock, method, path, body, o);
  return { status: a.status, body: checker.check(a), headers: a.headers };
}

const SOURCE = { connect: 'dest.example:7000', image: '/var/lib/images/a.img', 'ticket-file': '/etc/postcopy/a.ticket' };
const DEST = { image: '/var/lib/images/a.img', 'ticket-file': '/etc/postcopy/a.ticket' };
const OPERATIONS_WITH_BODY: Array<[string, string, unknown]> = [
  ['POST', '/v1/jobs', { role: 'source', options: SOURCE }],
  ['POST', '/v1/jobs/j1/speed', { bytesPerSecond: 1 }],
  ['POST', '/v1/jobs/j1/max-downtime', { ms: 100 }],
];
const ALL_OPERATIONS: Array<[string, string, unknown]> = [
  ...OPERATIONS_WITH_BODY,
  ['GET', '/v1/jobs', undefined],
  ['GET', '/v1/jobs/j1', undefined],
  ['POST', '/v1/jobs/j1/abort', undefined],
  ['DELETE', '/v1/jobs/j1', undefined],
];

describe('POST /v1/jobs', () => {
  it('201 with the status and Location; the options reach the service as sent', async () => {
    const r = await call('POST', '/v1/jobs', { role: 'source', id: 'mig-1', options: { ...SOURCE, 'postcopy-ram': true, 'max-bandwidth': '50M' } });
    expect(r.status).toBe(201);
    expect(r.headers.location).toBe('/v1/jobs/mig-1');
    expect(r.body).toMatchObject({ id: 'mig-1', role: 'source', state: 'queued', options: { ...SOURCE, 'postcopy-ram': true } });
    const d = await call('POST', '/v1/jobs', { role: 'dest', options: { ...DEST, force: true, 'nbd-socket': '/run/x.sock', 'max-bandwidth': '1G' } });
    expect(d.status).toBe(201);
    expect(d.body.role).toBe('dest');
  });

  it('409 when the id is taken', async () => {
    await call('POST', '/v1/jobs', { role: 'dest', id: 'same', options: DEST });
    const r = await call('POST', '/v1/jobs', { role: 'dest', id: 'same', options: DEST });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('id_taken');
  });

  it.each([
    ['an option the service provides (dest --listen)', { role: 'dest', options: { ...DEST, listen: '0.0.0.0:7000' } }, /unknown field 'listen'/],
    ['a source-only option on a dest job', { role: 'dest', options: { ...DEST, connect: 'x:1' } }, /unknown field 'connect'/],
    ['the service-provided --state-dir', { role: 'source', options: { ...SOURCE, 'state-dir': '/tmp/s' } }, /unknown field 'state-dir'/],
    ['--events', { role: 'source', options: { ...SOURCE, events: '/tmp/e' } }, /unknown field 'events'/],
    ['a TLS file', { role: 'source', options: { ...SOURCE, 'tls-cert': '/c' } }, /unknown field 'tls-cert'/],
    ['a required option missing', { role: 'source', options: { image: '/a', 'ticket-file': '/t' } }, /'connect' is required/],
    ['a flag given a string', { role: 'dest', options: { ...DEST, force: 'yes' } }, /force/],
    ['a value given a number', { role: 'source', options: { ...SOURCE, 'max-downtime': 50 } }, /max-downtime/],
    ['an unknown role', { role: 'both', options: DEST }, /role must be one of "source", "dest"/],
    ['a bad id', { role: 'dest', id: 'Has Spaces', options: DEST }, /id must match pattern/],
    ['no options', { role: 'dest' }, /'options' is required/],
    ['a stray field', { role: 'dest', options: DEST, priority: 1 }, /unknown field 'priority'/],
    ['not an object', [1, 2], /the body must be object/],
  ])('400 for %s, and the service never sees it', async (_what, body, message) => {
    const r = await call('POST', '/v1/jobs', body);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_request');
    expect(r.body.error.message).toMatch(message);
    expect(service.calls).toEqual([]);
  });

  it('400 for a body that is not JSON', async () => {
    const r = await call('POST', '/v1/jobs', undefined, { raw: '{"role": "dest",' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_json');
  });

  it("400 when the service refuses a value (its ApiError's status and code)", async () => {
    service.refuseSubmit = new ApiError(400, 'bad_option', '--block-size must be a power of two from 4K to 256K');
    const r = await call('POST', '/v1/jobs', { role: 'source', options: { ...SOURCE, 'block-size': '3K' } });
    expect(r.status).toBe(400);
    expect(r.body.error).toEqual({ code: 'bad_option', message: '--block-size must be a power of two from 4K to 256K' });
  });
});

describe('the job routes', () => {
  beforeEach(() => {
    service.jobs.set('j1', jobStatus('j1', 'source', { state: 'running', phase: 'streaming' }));
    service.jobs.set('d1', jobStatus('d1', 'dest', { state: 'running', phase: 'streaming', pastCutover: true }));
    service.jobs.set('done', jobStatus('done', 'dest', { state: 'completed', phase: 'completed' }));
  });

  it('GET /v1/jobs: 200 with every job', async () => {
    const r = await call('GET', '/v1/jobs');
    expect(r.status).toBe(200);
    expect(r.body.jobs.map((j: { id: string }) => j.id)).toEqual(['j1', 'd1', 'done']);
    // A query string does not change the route.
    expect((await call('GET', '/v1/jobs?state=running')).status).toBe(200);
  });

  it('GET /v1/jobs/ID: 200, 404 unknown, 404 for an id that cannot exist (not asked of the service)', async () => {
    expect((await call('GET', '/v1/jobs/j1')).body.phase).toBe('streaming');
    const unknown = await call('GET', '/v1/jobs/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('not_found');
    service.calls.length = 0;
    for (const bad of ['UPPER', '-lead', 'a%2Fb', '%E0%A4%A', 'x'.repeat(64)]) expect((await call('GET', `/v1/jobs/${bad}`)).status, bad).toBe(404);
    expect(service.calls).toEqual([]);
  });

  it('POST /v1/jobs/ID/abort: 200 rolled back, 409 past cut-over with the reason, 404 unknown', async () => {
    const r = await call('POST', '/v1/jobs/j1/abort');
    expect(r.status).toBe(200);
    expect(r.body.state).toBe('aborted');
    const refused = await call('POST', '/v1/jobs/d1/abort');
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toMatch(/past cut-over/);
    expect((await call('POST', '/v1/jobs/nope/abort')).status).toBe(404);
  });

  it('POST /v1/jobs/ID/speed: 200 capped and lifted (null), 400 for 0 / a string / no field, 404 unknown, 409 finished', async () => {
    const capped = await call('POST', '/v1/jobs/j1/speed', { bytesPerSecond: 50 * 2 ** 20 });
    expect(capped.status).toBe(200);
    expect(capped.body.speedLimitBytesPerSecond).toBe(50 * 2 ** 20);
    const lifted = await call('POST', '/v1/jobs/j1/speed', { bytesPerSecond: null });
    expect(lifted.body.speedLimitBytesPerSecond).toBeNull();
    service.calls.length = 0;
    for (const body of [{ bytesPerSecond: 0 }, { bytesPerSecond: '50M' }, { bytesPerSecond: 1.5 }, {}, { bytesPerSecond: 2 ** 60 }]) {
      expect((await call('POST', '/v1/jobs/j1/speed', body)).status, JSON.stringify(body)).toBe(400);
    }
    expect(service.calls).toEqual([]);
    expect((await call('POST', '/v1/jobs/nope/speed', { bytesPerSecond: 1 })).status).toBe(404);
    service.jobs.set('done', jobStatus('done', 'dest', { state: 'completed', phase: 'completed' }));
    expect((await call('POST', '/v1/jobs/done/speed', { bytesPerSecond: 1 })).status).toBe(409);
  });

  it('POST /v1/jobs/ID/max-downtime: 200, 400 out of range, 404 unknown, 409 on a dest job', async () => {
    expect((await call('POST', '/v1/jobs/j1/max-downtime', { ms: 200 })).body.maxDowntimeMs).toBe(200);
    expect((await call('POST', '/v1/jobs/j1/max-downtime', { ms: 0 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs/j1/max-downtime', { ms: 600_001 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs/nope/max-downtime', { ms: 200 })).status).toBe(404);
    expect((await call('POST', '/v1/jobs/d1/max-downtime', { ms: 200 })).status).toBe(409);
  });

  it('DELETE /v1/jobs/ID: 204 (no body) for a finished job, 409 while it runs, 404 unknown', async () => {
    const r = await call('DELETE', '/v1/jobs/done');
    expect(r.status).toBe(204);
    expect(service.jobs.has('done')).toBe(false);
    expect((await call('DELETE', '/v1/jobs/j1')).status).toBe(409);
    expect((await call('DELETE', '/v1/jobs/done')).status).toBe(404);
  });

  it('500 from every operation when the service throws something other than an ApiError: logged, no stack to the client', async () => {
    service.broken = new Error('the registry lost its marbles at /src/service/secret-path.ts:42');
    for (const [method, path, body] of ALL_OPERATIONS) {
      const r = await call(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(500);
      expect(r.body.error.code).toBe('internal');
      expect(JSON.stringify(r.body)).not.toMatch(/marbles|secret-path|at /);
    }
    expect(logLines.filter((l) => /marbles/.test(l))).toHaveLength(ALL_OPERATIONS.length);
    expect(JSON.parse(logLines.find((l) => /marbles/.test(l))!)).toMatchObject({ level: 50, msg: 'control API: request failed', err: { message: expect.stringMatching(/marbles/) } });
  });

  it('500 when the service answers with what JSON cannot hold (a BigInt): logged, and the service keeps answering', async () => {
    service.get = (id) => ({ ...jobStatus(id, 'source'), dataTotalBytes: 10n }) as never;
    const r = await call('GET', '/v1/jobs/j1');
    expect(r.status).toBe(500);
    expect(logLines.some((l) => /BigInt/.test(l))).toBe(true);
    expect((await call('GET', '/v1/jobs')).status).toBe(200);
  });
});

describe('requests outside the routes and bodies outside the rules', () => {
  beforeEach(() => service.jobs.set('j1', jobStatus('j1', 'source', { state: 'running' })));

  it('404 for a path no route has; 405 with Allow for a method the path lacks', async () => {
    for (const path of ['/', '/v2/jobs', '/v1/jobs/', '/v1/jobs/j1/pause', '/v1/jobs/j1/abort/x']) expect((await call('GET', path)).status, path).toBe(404);
    const put = await call('PUT', '/v1/jobs');
    expect(put.status).toBe(405);
    expect(put.headers.allow).toBe('GET, POST');
    expect((await call('GET', '/v1/jobs/j1/abort')).status).toBe(405);
    expect((await call('PATCH', '/v1/jobs/j1')).status).toBe(405);
  });

  it.each(OPERATIONS_WITH_BODY)('415 for %s %s with a body not declared JSON (or not declared)', async (method, path, body) => {
    expect((await call(method, path, undefined, { raw: JSON.stringify(body), contentType: 'text/plain' })).status).toBe(415);
    expect((await call(method, path, undefined, { raw: JSON.stringify(body), contentType: null })).status).toBe(415);
    // Parameters of the media type are fine.
    expect((await call(method, path, body, { contentType: 'application/json; charset=utf-8' })).status).toBeLessThan(300);
  });

  it.each(OPERATIONS_WITH_BODY)('413 for %s %s over 1 MiB, declared or chunked; the service never sees it', async (method, path) => {
    const big = JSON.stringify({ pad: 'x'.repeat(MAX_BODY_BYTES) });
    service.calls.length = 0;
    const declared = await call(method, path, undefined, { raw: big });
    expect(declared.status).toBe(413);
    expect(declared.body.error.code).toBe('payload_too_large');
    expect((await call(method, path, undefined, { raw: big, chunked: true })).status).toBe(413);
    expect(service.calls).toEqual([]);
  });

  it('a kept-alive connection answers on after a 413 (the rest of the body is drained, not read as a request)', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ask = (method: string, path: string, payload?: string) =>
      new Promise<{ status: number; port: unknown }>((resolve, reject) => {
        const req = http.request({ socketPath: sock, method, path, agent, headers: payload ? { 'Content-Type': 'application/json' } : {} }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, port: req.socket }));
        });
        req.on('error', reject);
        req.end(payload);
      });
    const first = await ask('POST', '/v1/jobs/j1/speed', JSON.stringify({ pad: 'x'.repeat(2 * MAX_BODY_BYTES) }));
    expect(first.status).toBe(413);
    const second = await ask('GET', '/v1/jobs/j1');
    expect(second.status).toBe(200);
    expect(second.port).toBe(first.port);
    agent.destroy();
  });
});
