// The NBD server's Unix socket file (issue 10, case 5): created 0600 (or the mode asked) with no moment of a
// wider mode whatever the umask, never in place of a file that is not a stale socket, removed only if still ours.
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NbdClient } from '../../src/nbd/client.js';
import { NbdServer } from '../../src/nbd/server.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { tempDir } from './helpers/tools.js';

const MiB = 1024 * 1024;

describe('the NBD server Unix socket file', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let oldUmask: number;
  const server = (): NbdServer => new NbdServer({ exports: new MemoryBlockDevice(MiB), logger: silentLogger() });

  beforeAll(async () => {
    tmp = await tempDir();
    // The most permissive umask: the mode must not depend on it.
    oldUmask = process.umask(0);
  });
  afterAll(async () => {
    process.umask(oldUmask);
    await tmp.cleanup();
  });

  it('is 0600 from the moment it exists (watched while listening, under umask 0), and serves', async () => {
    const sock = path.join(tmp.dir, 'a.sock');
    const s = server();
    const seen = new Set<number>();
    let listening = true;
    const watch = (async () => {
      while (listening) {
        try {
          seen.add(lstatSync(sock).mode & 0o777);
        } catch {
          // not there yet
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    await s.listen({ path: sock });
    listening = false;
    await watch;
    seen.add(lstatSync(sock).mode & 0o777);
    expect([...seen].map((m) => m.toString(8))).toEqual(['600']);
    expect(lstatSync(sock).isSocket()).toBe(true);
    const c = await NbdClient.connect({ socketPath: sock }, 'disk');
    expect(c.size).toBe(MiB);
    await c.close();
    await s.close();
    expect(() => lstatSync(sock)).toThrow();
    // Nothing left behind next to it (the private directory it was bound in).
    expect(readdirSync(tmp.dir).filter((n) => n.startsWith('.a.sock'))).toEqual([]);
  });

  it('takes the mode it is given', async () => {
    const sock = path.join(tmp.dir, 'b.sock');
    const s = server();
    await s.listen({ path: sock, mode: 0o660 });
    expect((statSync(sock).mode & 0o777).toString(8)).toBe('660');
    await s.close();
  });

  it('a regular file, a symlink or a directory at the path is refused and left exactly as it was', async () => {
    const file = path.join(tmp.dir, 'precious.img');
    writeFileSync(file, 'operator data', { mode: 0o640 });
    const link = path.join(tmp.dir, 'link.sock');
    symlinkSync(file, link);
    const dir = path.join(tmp.dir, 'dir.sock');
    mkdirSync(dir);
    for (const p of [file, link, dir]) {
      const s = server();
      await expect(s.listen({ path: p }), p).rejects.toMatchObject({ code: 'PC_ERR_USAGE', message: expect.stringContaining('is not a socket') });
      await s.close();
    }
    expect(readFileSync(file, 'utf8')).toBe('operator data');
    expect((statSync(file).mode & 0o777).toString(8)).toBe('640');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(lstatSync(dir).isDirectory()).toBe(true);
  });

  it('closing removes the socket file only if it is still the one it made', async () => {
    const sock = path.join(tmp.dir, 'c.sock');
    const s = server();
    await s.listen({ path: sock });
    unlinkSync(sock);
    writeFileSync(sock, 'someone else put this here');
    await s.close();
    expect(readFileSync(sock, 'utf8')).toBe('someone else put this here');
  });
});
