// Issue 10, case 5 end to end: D's NBD export is no longer an open read-write disk. Real `postcopy dest`
// and `source` processes, real clients (qemu-img, qemu-io, nbdinfo), a real second user (nobody, via setpriv).
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import * as C from '../../src/nbd/constants.js';
import { compareImages } from '../../src/guest/verify.js';
import { makePki, qemuTls, type Pki } from '../nbd/helpers/pki.js';
import { RawPeer } from '../nbd/helpers/raw-peer.js';
import { assertTools, run, skipWithout } from '../nbd/helpers/tools.js';
import { freePort, startAgent, waitForEvent, workDir, Teardown, type Agent } from './helpers/processes.js';

const TOOLS = ['qemu-img', 'qemu-io', 'nbdinfo', 'openssl', 'setpriv'];
const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

/** A migration of a small image with D's export options; resolves once it is complete and D serves on. */
async function exportedMigration(name: string, exportArgs: (dir: string) => string[]) {
  const t = workDir(name);
  teardown.later(t.cleanup);
  const src = join(t.dir, 'src.img');
  const dst = join(t.dir, 'dst.img');
  generateDemoImage(src, 8 * MiB, 5);
  const port = await freePort();
  const dEvents = join(t.dir, 'd.jsonl');
  const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket, '--events', dEvents, ...exportArgs(t.dir)]);
  teardown.agent(dest);
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', t.ticket]);
  teardown.agent(source);
  const exported = await waitForEvent(dEvents, (e) => e.event === 'export');
  expect((await source.exit).code, source.stderr()).toBe(0);
  await waitForEvent(dEvents, (e) => e.event === 'summary');
  const stop = async (): Promise<void> => {
    dest.child.kill('SIGTERM');
    expect((await dest.exit).code, dest.stderr()).toBe(0);
  };
  return { dir: t.dir, src, dst, dest, uris: exported.uris as string[], stop };
}

/** Exit 2 with one line on stderr (no stack), and nothing listening on either port. */
async function expectRefusedAtStart(agent: Agent, ports: number[]): Promise<string> {
  const { code } = await agent.exit;
  const err = agent.stderr();
  expect(code, err).toBe(2);
  expect(err.trim().split('\n')).toHaveLength(1);
  expect(err).not.toMatch(/\n\s+at /);
  for (const port of ports) expect(await accepts(port)).toBe(false);
  return err;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe.skipIf(skipWithout(TOOLS))("D's NBD export: TLS, exposure, socket mode, connection cap, read-only", () => {
  beforeAll(() => assertTools(TOOLS));

  it('--nbd-listen on a non-loopback address without TLS is refused at start (exit 2, one line, nothing listens); --nbd-insecure or TLS allow it', async () => {
    const t = workDir('nbd-exposed');
    teardown.later(t.cleanup);
    const [port, nbdPort] = [await freePort(), await freePort()];
    const dst = join(t.dir, 'dst.img');
    const base = ['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket];
    for (const host of ['0.0.0.0', '[::]']) {
      const err = await expectRefusedAtStart(teardown.agent(startAgent([...base, '--nbd-listen', `${host}:${nbdPort}`])), [port, nbdPort]);
      expect(err).toMatch(/reachable from other hosts.*--nbd-tls-cert.*--nbd-insecure/);
    }
    // A socket path where a file that is not a socket sits: refused, the file untouched.
    const precious = join(t.dir, 'precious');
    writeFileSync(precious, 'not ours');
    const err = await expectRefusedAtStart(teardown.agent(startAgent([...base, '--nbd-socket', precious])), [port]);
    expect(err).toMatch(/is not a socket/);
    expect(readFileSync(precious, 'utf8')).toBe('not ours');

    const events = join(t.dir, 'd.jsonl');
    const insecure = teardown.agent(startAgent([...base, '--events', events, '--nbd-listen', `0.0.0.0:${nbdPort}`, '--nbd-insecure']));
    await waitForEvent(events, (e) => e.event === 'listening');
    insecure.child.kill('SIGTERM');
    await insecure.exit;
  });

  describe('TLS', () => {
    let pki: Pki;
    let pkiDir: { cleanup(): void; dir: string };
    beforeAll(() => {
      pkiDir = workDir('nbd-pki');
      pki = makePki(pkiDir.dir);
    });
    afterAll(() => pkiDir.cleanup());

    it('a TLS export (on 0.0.0.0) serves qemu-img, qemu-io and nbdinfo with certificates; a plain client and one with a stranger certificate are refused', async () => {
      const nbdPort = await freePort();
      const s = (n: string): string => join(pki.serverDir, n);
      const x = await exportedMigration('nbd-tls', () => [
        '--nbd-listen', `0.0.0.0:${nbdPort}`,
        '--nbd-tls-cert', s('server-cert.pem'), '--nbd-tls-key', s('server-key.pem'), '--nbd-tls-ca', s('ca-cert.pem'),
      ]);
      expect(x.uris[0]).toMatch(/^nbds:\/\//);
      const out = join(x.dir, 'out.img');
      const convert = await run('qemu-img', ['convert', ...qemuTls(pki.clientDir, nbdPort), '-O', 'raw', out]);
      expect(convert.code, convert.stderr).toBe(0);
      expect((await compareImages(x.src, out)).ok).toBe(true);
      const io = await run('qemu-io', [...qemuTls(pki.clientDir, nbdPort), '-c', 'write -P 0x77 1M 64k', '-c', 'read -P 0x77 1M 64k', '-c', 'flush']);
      expect(io.code, io.stdout + io.stderr).toBe(0);
      expect(io.stdout + io.stderr).not.toMatch(/fail|error|mismatch/i);
      const info = await run('nbdinfo', ['--size', `nbds://127.0.0.1:${nbdPort}/disk?tls-certificates=${pki.clientDir}`]);
      expect(info.code, info.stderr).toBe(0);
      expect(info.stdout.trim()).toBe(String(8 * MiB));

      const plain = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x66 0 64k', `nbd://127.0.0.1:${nbdPort}/disk`]);
      expect(plain.code).not.toBe(0);
      const plainInfo = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${nbdPort}/disk`]);
      expect(plainInfo.code).not.toBe(0);
      const stranger = await run('qemu-io', [...qemuTls(pki.strangerDir, nbdPort), '-c', 'write -P 0x66 0 64k']);
      expect(stranger.code).not.toBe(0);
      await x.stop();
      // The authorized write is in the image; the refused clients' writes are not.
      const got = readFileSync(x.dst);
      expect(got.subarray(MiB, MiB + 64 * 1024).every((b) => b === 0x77)).toBe(true);
      expect(got.subarray(0, 64 * 1024).equals(readFileSync(x.src).subarray(0, 64 * 1024))).toBe(true);
    });
  });

  describe('the Unix socket and a second local user', () => {
    let umask: number;
    beforeAll(() => {
      // The most permissive umask for the agents we start: the socket's mode must not come from it.
      umask = process.umask(0);
    });
    afterAll(() => process.umask(umask));

    async function socketExport(name: string, extra: string[] = []) {
      const x = await exportedMigration(name, (dir) => {
        // nobody may traverse the directory: only the socket's own mode stands in the way.
        chmodSync(dir, 0o755);
        return ['--nbd-socket', join(dir, 'export.sock'), ...extra];
      });
      return { ...x, sock: join(x.dir, 'export.sock'), uri: `nbd+unix:///disk?socket=${join(x.dir, 'export.sock')}` };
    }
    const asNobody = (args: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/nbdinfo', ...args]);

    it('is created 0600: root connects, the unprivileged user nobody cannot (nbdinfo via setpriv)', async () => {
      const x = await socketExport('nbd-sock');
      expect((statSync(x.sock).mode & 0o777).toString(8)).toBe('600');
      const mine = await run('nbdinfo', ['--size', x.uri]);
      expect(mine.code, mine.stderr).toBe(0);
      const theirs = await asNobody(['--size', x.uri]);
      expect(theirs.code).not.toBe(0);
      expect(theirs.stderr).toMatch(/permission denied/i);
      await x.stop();
    });

    it('--nbd-socket-mode 0666 lets nobody in (the check above can tell the difference)', async () => {
      const x = await socketExport('nbd-sock-open', ['--nbd-socket-mode', '0666']);
      expect((statSync(x.sock).mode & 0o777).toString(8)).toBe('666');
      const theirs = await asNobody(['--size', x.uri]);
      expect(theirs.code, theirs.stderr).toBe(0);
      await x.stop();
    });
  });

  it('a real client gets in while 128 idle and half-open clients hold every slot', async () => {
    const nbdPort = await freePort();
    const x = await exportedMigration('nbd-cap', () => ['--nbd-listen', `127.0.0.1:${nbdPort}`]);
    const held: Array<{ destroy(): void }> = [];
    teardown.later(() => held.forEach((h) => h.destroy()));
    for (let i = 0; i < 64; i++) {
      const p = await RawPeer.connect(nbdPort);
      await p.enter();
      held.push(p);
    }
    for (let i = 0; i < 64; i++) {
      const s = net.connect({ port: nbdPort, host: '127.0.0.1' });
      s.on('error', () => undefined);
      s.resume();
      held.push(s);
      await new Promise((r) => s.once('connect', r));
    }
    const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${nbdPort}/disk`], 20_000);
    expect(info.code, info.stderr).toBe(0);
    const io = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 64k', `nbd://127.0.0.1:${nbdPort}/disk`], 20_000);
    expect(io.code, io.stdout + io.stderr).toBe(0);
    held.forEach((h) => h.destroy());
    await x.stop();
  });

  it('--nbd-read-only: the export says so and refuses writes; the image stays what S sent', async () => {
    const nbdPort = await freePort();
    const x = await exportedMigration('nbd-ro', () => ['--nbd-listen', `127.0.0.1:${nbdPort}`, '--nbd-read-only']);
    const uri = `nbd://127.0.0.1:${nbdPort}/disk`;
    const ro = await run('nbdinfo', ['--is', 'read-only', uri]);
    expect(ro.code, ro.stderr).toBe(0);
    // qemu refuses to open a read-only export for writing; a client that writes anyway gets EPERM.
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 64k', uri]);
    expect(w.code).not.toBe(0);
    expect(w.stdout + w.stderr).toMatch(/read-only|not permitted|permission denied/i);
    const p = await RawPeer.connect(nbdPort);
    await p.enter();
    p.request(C.NBD_CMD_WRITE, 7n, 0, 4096, 0, Buffer.alloc(4096, 0x99));
    expect((await p.reply(7n)).error).toBe(C.NBD_EPERM);
    p.request(C.NBD_CMD_WRITE_ZEROES, 8n, 0, 4096);
    expect((await p.reply(8n)).error).toBe(C.NBD_EPERM);
    p.destroy();
    const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 64k', uri]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await x.stop();
    expect((await compareImages(x.src, x.dst)).ok).toBe(true);
  });
});
