// The control socket's file: 0600 with no other name left behind, a second local user (nobody, via setpriv) cannot
// connect, nothing but a stale socket is ever replaced. (A socket handed over by fd: test/e2e/control-socket-activation.)
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { startControlApi, type ControlApi } from '../../src/service/control-api.js';
import { FakeJobService } from '../helpers/fake-job-service.js';
import { apiRequest } from '../helpers/openapi-check.js';
import { assertTools, skipWithout } from '../nbd/helpers/tools.js';

let dir: string;
let sock: string;
const open: ControlApi[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'control-sock-'));
  // Others may traverse the directory: only the socket's own mode keeps them out (what the nobody test checks).
  chmodSync(dir, 0o755);
  sock = join(dir, 'control.sock');
});
afterEach(async () => {
  for (const api of open.splice(0)) await api.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(o: { path?: string; fd?: number } = { path: sock }): Promise<ControlApi> {
  const api = await startControlApi({ ...o, service: new FakeJobService(), log: silentLogger() });
  open.push(api);
  return api;
}

/** Connect to the socket as the user nobody; resolves with 'connected' or the error code. */
function connectAsNobody(path: string): Promise<string> {
  const script = `require('net').connect(${JSON.stringify(path)}).on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(0) })`;
  return new Promise((resolve, reject) => {
    execFile('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`setpriv failed: ${err.message} ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

describe('the control socket file', () => {
  it('is 0600 with no other name of it left in the directory, and answers', async () => {
    await start();
    expect((statSync(sock).mode & 0o777).toString(8)).toBe('600');
    expect(statSync(sock).isSocket()).toBe(true);
    expect(readdirSync(dir)).toEqual(['control.sock']);
    expect((await apiRequest(sock, 'GET', '/v1/jobs')).status).toBe(200);
  });

  describe.skipIf(skipWithout(['setpriv']))('another local user', () => {
    beforeEach(() => assertTools(['setpriv']));

    it('cannot connect (EACCES); with the mode opened, it can (the check tells the difference)', async () => {
      await start();
      expect(await connectAsNobody(sock)).toBe('EACCES');
      chmodSync(sock, 0o666);
      expect(await connectAsNobody(sock)).toBe('connected');
    });
  });

  it('a regular file at the path is refused and left as it was', async () => {
    writeFileSync(sock, 'the operator\'s notes\n');
    await expect(start()).rejects.toThrow(/--control .*control\.sock exists and is not a socket; it is left alone/);
    expect(readFileSync(sock, 'utf8')).toBe('the operator\'s notes\n');
    expect(readdirSync(dir)).toEqual(['control.sock']);
  });

  it('a live socket at the path (a service already running) is refused and keeps serving', async () => {
    await start();
    await expect(start()).rejects.toThrow(/another process serves on this socket/);
    expect((await apiRequest(sock, 'GET', '/v1/jobs')).status).toBe(200);
    expect(readdirSync(dir)).toEqual(['control.sock']);
  });

  it('a stale socket (its process killed) is replaced', async () => {
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    await new Promise((r) => child.once('exit', r));
    expect(statSync(sock).isSocket()).toBe(true);
    await start();
    expect((statSync(sock).mode & 0o777).toString(8)).toBe('600');
    expect((await apiRequest(sock, 'GET', '/v1/jobs')).status).toBe(200);
  });

  it('a directory that does not exist is one clear error', async () => {
    await expect(start({ path: join(dir, 'nope', 'control.sock') })).rejects.toThrow(/--control .*: directory .*nope does not exist/);
  });

  it('close removes the file it made, and only that', async () => {
    const api = await start();
    open.length = 0;
    await api.close();
    expect(existsSync(sock)).toBe(false);
  });
});
