// The real `postcopy serve` started by the real systemd-socket-activate, its migration port and control socket handed
// over by name (LISTEN_FDS, LISTEN_FDNAMES=migration:control): a standalone `postcopy source` migrates through the
// activated port into a dest job, byte-exact; then every route of the control API answers as schema/openapi.v1.json
// says, each documented status reached on this real service (all but the 500s no request can cause).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { connect } from 'node:net';
import { apiRequest, type ApiAnswer } from '../helpers/openapi-check.js';
import { pollUntil, waitUntil } from '../helpers/wait.js';
import { assertTools, skipWithout } from '../nbd/helpers/tools.js';
import { ControlClient } from './helpers/control.js';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { CLI, freePort, startAgent, Teardown, workDir } from './helpers/processes.js';

const MiB = 1024 * 1024;
const teardown = new Teardown();
afterEach(() => teardown.run());

describe.skipIf(skipWithout(['systemd-socket-activate']))('postcopy serve under systemd socket activation', () => {
  it('migrates through the port it is handed, and every API route answers as documented', async () => {
    assertTools(['systemd-socket-activate']);
    const w = workDir('serve-activated');
    teardown.later(w.cleanup);
    const port = await freePort();
    const control = join(w.dir, 'control.sock');
    const root = join(w.dir, 'root');
    const activator = spawn(
      'systemd-socket-activate',
      ['-l', `127.0.0.1:${port}`, '-l', control, '--fdname=migration:control', process.execPath, ...AGENT_NODE_FLAGS, CLI, 'serve', '--root', root, '--max-jobs', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    activator.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    activator.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    teardown.later(() => void activator.kill('SIGKILL'));
    await waitUntil(() => existsSync(control) && statSync(control).isSocket(), 'the activator to make the control socket');

    // The first connection starts the service; it serves both sockets from then on.
    const api = new ControlClient(control);
    expect(await api.jobs(), out).toEqual([]);
    mkdirSync(join(w.dir, 'images'), { mode: 0o700 });
    const src = join(w.dir, 'images', 'src.img');
    const dst = join(w.dir, 'images', 'dst.img');
    generateDemoImage(src, 16 * MiB, 7);
    await api.submit('dest', 'in-1', { image: dst, 'ticket-file': w.ticket });
    const source = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket, '--state-dir', join(w.dir, 'sstate')]));
    expect((await source.exit).code, source.stderr()).toBe(0);
    await pollUntil(async () => (await api.job('in-1')).state === 'completed', 'the dest job to complete');
    expect((await compareImages(src, dst)).ok).toBe(true);

    // Every route, every status a request can cause, against this real service.
    const call = (method: string, path: string, body?: unknown) => api.call<unknown>(method, path, body);
    const raw = async (method: string, path: string, text: string, contentType: string | null = 'application/json') =>
      api.checker.check(await apiRequest(control, method, path, undefined, { raw: text, contentType }));
    expect((await call('GET', '/v1/jobs/in-1')).status).toBe(200);
    expect((await call('GET', '/v1/jobs/nope')).status).toBe(404);
    expect((await call('POST', '/v1/jobs', { role: 'dest', options: { image: 'relative' } })).status).toBe(400);
    expect((await call('POST', '/v1/jobs', { role: 'dest', id: 'in-1', options: { image: join(w.dir, 'images', 'x.img'), 'ticket-file': w.ticket } })).status).toBe(409);
    await raw('POST', '/v1/jobs', '{not json');
    await raw('POST', '/v1/jobs', 'role=dest', 'application/x-www-form-urlencoded');
    api.checker.check(await declaredTooLarge(control, '/v1/jobs'));
    // A queued source job (its dest is busy: max-jobs 1 holds the second one back) takes speed and max-downtime.
    const t2 = join(w.dir, 'ticket2');
    writeFileSync(t2, 'b'.repeat(48) + '\n', { mode: 0o600 });
    expect((await call('POST', '/v1/jobs', { role: 'dest', id: 'in-2', options: { image: join(w.dir, 'images', 'd2.img'), 'ticket-file': t2 } })).status).toBe(201);
    expect((await call('POST', '/v1/jobs', { role: 'source', id: 'out-1', options: { connect: '127.0.0.1:1', image: src, 'ticket-file': t2, 'connect-timeout': '600' } })).status).toBe(201);
    for (const route of ['speed', 'max-downtime']) {
      await raw('POST', `/v1/jobs/out-1/${route}`, '{', 'application/json');
      await raw('POST', `/v1/jobs/out-1/${route}`, 'x', 'text/plain');
      api.checker.check(await declaredTooLarge(control, `/v1/jobs/out-1/${route}`));
      expect((await call('POST', `/v1/jobs/nope/${route}`, route === 'speed' ? { bytesPerSecond: 1 } : { ms: 10 })).status).toBe(404);
    }
    expect((await call('POST', '/v1/jobs/out-1/speed', { bytesPerSecond: 4 * MiB })).status).toBe(200);
    expect((await call('POST', '/v1/jobs/out-1/speed', { bytesPerSecond: -1 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs/out-1/max-downtime', { ms: 200 })).status).toBe(200);
    expect((await call('POST', '/v1/jobs/out-1/max-downtime', { ms: 0 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs/in-2/max-downtime', { ms: 200 })).status).toBe(409);
    expect((await call('DELETE', '/v1/jobs/in-2')).status).toBe(409);
    expect((await call('POST', '/v1/jobs/in-2/abort')).status).toBe(200);
    expect((await call('POST', '/v1/jobs/in-2/abort')).status).toBe(409);
    expect((await call('POST', '/v1/jobs/in-2/speed', { bytesPerSecond: MiB })).status).toBe(409);
    expect((await call('POST', '/v1/jobs/nope/abort')).status).toBe(404);
    expect((await call('POST', '/v1/jobs/out-1/abort')).status).toBe(200);
    expect((await call('DELETE', '/v1/jobs/in-1')).status).toBe(204);
    expect((await call('DELETE', '/v1/jobs/in-1')).status).toBe(404);
    await raw('GET', '/v2/nothing', '', null);
    await raw('PUT', '/v1/jobs', '', null);
    const unreachable = api.checker.missing().filter((k) => !k.endsWith(' 500'));
    expect(unreachable).toEqual([]);
  }, 120_000);
});

/**
 * A request whose Content-Length is over the 1 MiB cap, its body never sent: the service answers 413 from the
 * headers alone. (Sending the megabyte races the service's close after its early answer: EPIPE on our side.)
 */
function declaredTooLarge(socketPath: string, path: string): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
    socket.on('error', reject);
    socket.on('end', () => {
      const [head = '', ...rest] = text.split('\r\n\r\n');
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ method: 'POST', path, status: Number(statusLine.split(' ')[1]), headers, text: rest.join('\r\n\r\n') });
    });
    socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${2 * MiB}\r\nConnection: close\r\n\r\n`);
  });
}
