// The start-up checks on real files and sockets: what they accept matters as much as what they refuse (a D
// restarted after SIGKILL finds its own stale export socket and its own image, and must start).
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { checkImagePath, checkSocketPath, checkStateDir, holdPort, listenFailure } from '../../src/cli/preflight.js';

const dirs: string[] = [];
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'postcopy-preflight-'));
  dirs.push(d);
  return d;
}

function listen(server: Server, target: string | { port: number; host: string }): Promise<void> {
  servers.push(server);
  return new Promise((res, rej) => {
    server.once('error', rej);
    if (typeof target === 'string') server.listen(target, () => res());
    else server.listen(target.port, target.host, () => res());
  });
}

describe('checkSocketPath', () => {
  it('accepts a socket file nobody serves on (left by a killed D), refuses one someone serves on', async () => {
    const dir = tempDir();
    const stale = join(dir, 'stale.sock');
    // A socket file whose server is gone: made by a process that exits without unlinking it.
    const made = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
    expect(made.status).toBe(0);
    expect(lstatSync(stale).isSocket()).toBe(true);
    await expect(checkSocketPath(stale, '--nbd-socket')).resolves.toBeUndefined();
    const live = join(dir, 'live.sock');
    await listen(createServer((s) => s.destroy()), live);
    await expect(checkSocketPath(live, '--nbd-socket')).rejects.toThrow(/another process serves on/);
  });

  it('refuses a regular file in its place', async () => {
    const file = join(tempDir(), 'keep');
    writeFileSync(file, 'x');
    await expect(checkSocketPath(file, '--nbd-socket')).rejects.toBeInstanceOf(UsageError);
  });
});

describe('checkImagePath and checkStateDir', () => {
  it('accept an existing image and state dir (a resume) and new ones under an existing directory', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'd.img'), Buffer.alloc(4096));
    mkdirSync(join(dir, 'd.img.state'));
    expect(() => checkImagePath(join(dir, 'd.img'))).not.toThrow();
    expect(() => checkStateDir(join(dir, 'd.img.state'))).not.toThrow();
    expect(() => checkImagePath(join(dir, 'new.img'))).not.toThrow();
    expect(() => checkStateDir(join(dir, 'a', 'b', 'state'))).not.toThrow();
  });
});

describe('holdPort', () => {
  it('keeps the port from others until released, then it is free', async () => {
    const hold = await holdPort({ host: '127.0.0.1', port: 0 }, '--nbd-listen');
    const other = createServer();
    await expect(listen(other, { port: hold.port, host: '127.0.0.1' })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await hold.release();
    await hold.release();
    await expect(listen(createServer(), { port: hold.port, host: '127.0.0.1' })).resolves.toBeUndefined();
  });

  it('a bind error that is not a mistake passes through unchanged', () => {
    const e = Object.assign(new Error('odd'), { code: 'EMFILE' });
    expect(listenFailure(e, { host: '127.0.0.1', port: 1 }, '--listen')).toBe(e);
  });
});
