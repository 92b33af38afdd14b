// The control API on a socket systemd hands over (LISTEN_FDS, fd 3), started by the real systemd-socket-activate
// around the built dist/: served as it is, and left in place when the API closes (the socket unit owns it).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
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
const api = await startControlApi({ fd: Number(process.env.LISTEN_FDS) === 1 ? 3 : -1, service, log: silentLogger() });
process.on('SIGTERM', async () => { await api.close(); console.log('closed'); process.exit(0); });
`;

describe.skipIf(skipWithout(['systemd-socket-activate']))('the control API under systemd socket activation', () => {
  it('serves on the socket it is handed (fd 3) and leaves the file to its owner at close', async () => {
    assertTools(['systemd-socket-activate']);
    if (!existsSync(join(DIST, 'service/control-api.js'))) throw new Error(`${DIST} lacks the control API: run 'npm run build' (npm test does)`);
    const dir = mkdtempSync(join(tmpdir(), 'control-activate-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = join(dir, 'control.sock');
    const child = spawn('systemd-socket-activate', ['-l', sock, process.execPath, '--input-type=module', '-e', CHILD], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    cleanups.push(() => child.kill('SIGKILL'));
    await waitUntil(() => existsSync(sock) && statSync(sock).isSocket(), 'systemd-socket-activate to make the socket');
    // systemd-socket-activate starts the program at the first connection (it accepts nothing itself).
    const first = await apiRequest(sock, 'GET', '/v1/jobs');
    expect(first.status, out).toBe(200);
    expect(JSON.parse(first.text)).toEqual({ jobs: [] });
    child.kill('SIGTERM');
    expect(await exited, out).toBe(0);
    expect(out).toContain('closed');
    expect(existsSync(sock)).toBe(true);
  });
});
