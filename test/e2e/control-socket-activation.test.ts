// The control API on a socket systemd hands over (LISTEN_FDS, fd 3), started by the real systemd-socket-activate
// around the built dist/: a Unix socket is served as it is and left in place when the API closes (the socket unit
// owns it); a TCP socket is refused (the file mode is the API's only access control).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { freePort } from '../../src/common/free-port.js';
import { apiRequest } from '../helpers/openapi-check.js';
import { waitUntil } from '../helpers/wait.js';
import { assertTools, skipWithout } from '../nbd/helpers/tools.js';

const DIST = resolve(__dirname, '../../dist');
const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

/** A child that serves the control API on fd 3 with a service of no jobs; it closes the API on SIGTERM and says so. */
const CHILD = `
const { startControlApi } = await import(${JSON.stringify(join(DIST, 'service/control-api.js'))});
const { silentLogger } = await import(${JSON.stringify(join(DIST, 'common/logger.js'))});
const service = { list: () => [] };
try {
  const api = await startControlApi({ fd: Number(process.env.LISTEN_FDS) === 1 ? 3 : -1, service, log: silentLogger() });
  process.on('SIGTERM', async () => { await api.close(); console.log('closed'); process.exit(0); });
} catch (e) {
  console.log(e.message);
  process.exit(2);
}
`;

/** systemd-socket-activate listening on `where`, running CHILD at the first connection. */
function activate(where: string) {
  const child = spawn('systemd-socket-activate', ['-l', where, process.execPath, '--input-type=module', '-e', CHILD], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  cleanups.push(() => child.kill('SIGKILL'));
  return { child, exited, out: () => out };
}

describe.skipIf(skipWithout(['systemd-socket-activate']))('the control API under systemd socket activation', () => {
  let dir: string;
  beforeEach(() => {
    assertTools(['systemd-socket-activate']);
    if (!existsSync(join(DIST, 'service/control-api.js'))) throw new Error(`${DIST} lacks the control API: run 'npm run build' (npm test does)`);
    dir = mkdtempSync(join(tmpdir(), 'control-activate-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  });

  it('serves on the Unix socket it is handed (fd 3) and leaves the file to its owner at close', async () => {
    const sock = join(dir, 'control.sock');
    const a = activate(sock);
    await waitUntil(() => existsSync(sock) && statSync(sock).isSocket(), 'systemd-socket-activate to make the socket');
    // systemd-socket-activate starts the program at the first connection (it accepts nothing itself).
    const first = await apiRequest(sock, 'GET', '/v1/jobs');
    expect(first.status, a.out()).toBe(200);
    expect(JSON.parse(first.text)).toEqual({ jobs: [] });
    a.child.kill('SIGTERM');
    expect(await a.exited, a.out()).toBe(0);
    expect(a.out()).toContain('closed');
    expect(existsSync(sock)).toBe(true);
  });

  it('refuses a TCP socket handed over: anyone could connect to it', async () => {
    const port = await freePort();
    const a = activate(`127.0.0.1:${port}`);
    // Connect (retrying until systemd-socket-activate listens) to make it start the program.
    await waitUntil(() => a.out().includes('Listening on'), 'systemd-socket-activate to listen', 30_000);
    const probe = net.connect(port, '127.0.0.1').on('error', () => undefined);
    cleanups.push(() => probe.destroy());
    expect(await a.exited, a.out()).toBe(2);
    expect(a.out()).toMatch(/is not a Unix socket: the control API is served on a Unix socket only/);
  });
});
