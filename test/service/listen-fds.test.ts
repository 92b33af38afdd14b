// systemd socket activation: LISTEN_* parsed as sd_listen_fds(3) does (unit tests on a given environment), then the
// real thing: systemd-socket-activate opens a TCP and a Unix socket, names them, and execs a node process that adopts
// them through listen-fds; its SharedMigrationPort answers a stranger on the TCP one, its control socket the other.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { freePort } from '../../src/common/free-port.js';
import { newNonce, ticketId } from '../../src/protocol/handshake.js';
import { SD_LISTEN_FDS_START, fdNamed, takeListenFds } from '../../src/service/listen-fds.js';
import { expectThrows } from '../helpers/errors.js';
import { assertTools, skipWithout, toolPath } from '../nbd/helpers/tools.js';
import { bytesOf, stranger, waitFor } from '../hostile/hostile-harness.js';
import { newTicket } from './port-harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'helpers/activated-port.mjs');
const DIST = resolve(here, '../../dist/service/listen-fds.js');

describe('takeListenFds (sd_listen_fds semantics)', () => {
  // stdin/stdout/stderr are no sockets under vitest's forks, so fds 3.. are borrowed from real sockets below.
  it('not activated: no LISTEN_PID, or another process\'s (a child must not take its parent\'s sockets)', () => {
    expect(takeListenFds({}, 100)).toEqual([]);
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '99', LISTEN_FDS: '1', LISTEN_FDNAMES: 'migration' };
    expect(takeListenFds(env, 100)).toEqual([]);
    // Read once, then gone, as sd_listen_fds(unset_environment=1) leaves them.
    expect(env).toEqual({});
  });

  it('malformed counts and names are the unit\'s mistake: UsageError, and the variables are gone all the same', () => {
    for (const bad of [{ LISTEN_FDS: 'two' }, { LISTEN_FDS: '-1' }, { LISTEN_FDS: '' }, { LISTEN_FDS: '2', LISTEN_FDNAMES: 'migration' }, { LISTEN_FDS: '1', LISTEN_FDNAMES: 'a:b' }]) {
      const env: NodeJS.ProcessEnv = { LISTEN_PID: '100', ...bad };
      expectThrows(() => takeListenFds(env, 100), UsageError, 'PC_ERR_USAGE');
      expect(env).toEqual({});
    }
  });

  it('zero sockets is no error; an fd that is not a socket is refused', () => {
    expect(takeListenFds({ LISTEN_PID: '100', LISTEN_FDS: '0' }, 100)).toEqual([]);
    // Far above anything open in this process: not a socket (not even open).
    const e = expectThrows(() => takeListenFds({ LISTEN_PID: '100', LISTEN_FDS: '1000', LISTEN_FDNAMES: Array(1000).fill('x').join(':') }, 100), UsageError, 'PC_ERR_USAGE');
    expect(e.message).toMatch(/is not a socket/);
  });

  it('fdNamed: by name; a name given twice is refused', () => {
    const sockets = [{ fd: 3, name: 'migration' }, { fd: 4, name: 'control' }, { fd: 5, name: 'x' }, { fd: 6, name: 'x' }];
    expect(fdNamed(sockets, 'control')).toBe(4);
    expect(fdNamed(sockets, 'metrics')).toBeUndefined();
    expectThrows(() => fdNamed(sockets, 'x'), UsageError, 'PC_ERR_USAGE');
    expect(SD_LISTEN_FDS_START).toBe(3);
  });
});

describe.skipIf(skipWithout(['systemd-socket-activate']))('under the real systemd-socket-activate', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  it('a node process adopts the named TCP and Unix sockets: the migration port refuses a stranger, the control socket answers', async () => {
    assertTools(['systemd-socket-activate']);
    // The child runs the built code, as the service does (npm test builds first).
    expect(existsSync(DIST), `${DIST} missing: npm run build`).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'pc-activate-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const controlPath = join(dir, 'control.sock');
    const port = await freePort();
    const child = spawn(toolPath('systemd-socket-activate')!, ['-l', `127.0.0.1:${port}`, '-l', controlPath, '--fdname=migration:control', process.execPath, CHILD], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => (stderr += c.toString()));
    // It binds both, then waits for the first connection before it execs the service.
    await waitFor(() => /as 4\./.test(stderr), `systemd-socket-activate listening (it said: ${stderr})`, 10_000);

    // The first connection starts the node process, which takes it from the backlog: an unknown ticket is refused.
    const hello = { type: 'HELLO' as const, versions: [1, 1] as [number, number], caps: [], nonce: newNonce(), ticketId: ticketId(newTicket('nobody')) };
    const x = await stranger({ host: '127.0.0.1', port }, ({ socket }) => void socket.write(bytesOf(hello)), 15_000);
    expect(x.error?.code, `stderr: ${stderr}`).toBe('PC_ERR_BUSY');
    expect(x.closed).toBe(true);

    const answer = await new Promise<string>((res, rej) => {
      let text = '';
      const s = connect(controlPath);
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('end', () => res(text));
      s.on('error', rej);
    });
    const report = JSON.parse(answer) as { pid: number; sockets: Array<{ fd: number; name: string }>; envLeft: string[]; address: { host: string; port: number } };
    expect(report.pid).toBe(child.pid);
    expect(report.sockets).toEqual([{ fd: 3, name: 'migration' }, { fd: 4, name: 'control' }]);
    expect(report.envLeft).toEqual([]);
    expect(report.address).toEqual({ host: '127.0.0.1', port });
  });
});
