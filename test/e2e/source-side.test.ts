// The source side as safe as the destination (issue 10, cases 8, 10, 11), with real processes:
// S checks its image before it connects; S has a default state dir that resumes after a crash; a stop
// request before cut-over aborts at once, after cut-over it is refused once and then exits 5 keeping state.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { beforeAll, afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { defaultSourceStateDir } from '../../src/source/source-state.js';
import { assertTools, skipWithout, startNbdkit } from '../nbd/helpers/tools.js';
import { CLI, letOthersReachCheckout, freePort, readEvents, startAgent, waitForEvent, workDir, Teardown, type Agent } from './helpers/processes.js';
import { waitUntil } from '../helpers/wait.js';

// Some rows run the CLI as user nobody: it must reach the checkout, wherever it was cloned.
beforeAll(() => letOthersReachCheckout());

const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());


/** A TCP listener standing in for D that only counts connections: S must never reach it. */
async function countingListener(): Promise<{ port: number; connections: () => number }> {
  let n = 0;
  const server: Server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  teardown.later(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as { port: number }).port, connections: () => n };
}

function expectOneLineNoStack(a: Agent): void {
  const lines = a.stderr().trim().split('\n');
  expect(lines, a.stderr()).toHaveLength(1);
  expect(a.stderr()).not.toMatch(/\n\s+at /);
}

/** Exits within the deadline, else is killed (old code retried some of these forever). */
async function exitWithin(a: Agent, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const timer = setTimeout(() => a.child.kill('SIGKILL'), ms);
  const r = await a.exit;
  clearTimeout(timer);
  return r;
}

describe('case 8: S checks its image before connecting', () => {
  const mistakes: Array<[string, (dir: string) => string]> = [
    ['a directory', (dir) => {
      mkdirSync(join(dir, 'imgdir'));
      return join(dir, 'imgdir');
    }],
    ['a 0-byte file', (dir) => {
      writeFileSync(join(dir, 'empty.img'), '');
      return join(dir, 'empty.img');
    }],
    ['a missing file', (dir) => join(dir, 'missing.img')],
    ['a character device', () => '/dev/null'],
  ];
  for (const [what, make] of mistakes) {
    it(`${what} as --image: exit 2, one line, no connection`, async () => {
      const w = workDir('s-image');
      teardown.later(w.cleanup);
      const image = make(w.dir);
      const d = await countingListener();
      const s = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${d.port}`, '--image', image, '--ticket-file', w.ticket, '--connect-timeout', '5']));
      const r = await exitWithin(s, 20_000);
      expect(r.code, s.stderr()).toBe(2);
      expectOneLineNoStack(s);
      expect(s.stderr()).toContain(image);
      expect(d.connections()).toBe(0);
    }, 30_000);
  }

  it('an image the user cannot read: exit 2, one line, no connection', async () => {
    const w = workDir('s-unreadable');
    teardown.later(w.cleanup);
    // A real second user: root reads anything, so the operator here is 'nobody'.
    chmodSync(w.dir, 0o755);
    chownSync(w.ticket, 65534, 65534); // theirs, 0600: no warning about a ticket others can read
    const image = join(w.dir, 'secret.img');
    writeFileSync(image, Buffer.alloc(MiB, 1));
    chmodSync(image, 0o600);
    const stateDir = join(w.dir, 'nobody-state');
    mkdirSync(stateDir);
    chownSync(stateDir, 65534, 65534);
    const d = await countingListener();
    const s = teardown.agent(
      startAgentAs('nobody', ['source', '--connect', `127.0.0.1:${d.port}`, '--image', image, '--ticket-file', w.ticket, '--state-dir', stateDir, '--connect-timeout', '5']),
    );
    const r = await exitWithin(s, 20_000);
    expect(r.code, s.stderr()).toBe(2);
    expectOneLineNoStack(s);
    expect(s.stderr()).toMatch(/not readable/);
    expect(d.connections()).toBe(0);
  }, 30_000);

  it('an NBD URI with nothing listening: exit 2, one line, no connection', async () => {
    const w = workDir('s-nbd-gone');
    teardown.later(w.cleanup);
    const d = await countingListener();
    const nbdPort = await freePort();
    const s = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${d.port}`, '--image', `nbd://127.0.0.1:${nbdPort}/disk`, '--ticket-file', w.ticket, '--state-dir', join(w.dir, 'st'), '--connect-timeout', '5']));
    const r = await exitWithin(s, 20_000);
    expect(r.code, s.stderr()).toBe(2);
    expectOneLineNoStack(s);
    expect(s.stderr()).toMatch(/cannot reach the NBD export/);
    expect(d.connections()).toBe(0);
  }, 30_000);

  it.skipIf(skipWithout(['nbdkit']))('an empty NBD export: exit 2, one line, no connection', async () => {
    assertTools(['nbdkit']);
    const w = workDir('s-nbd-empty');
    teardown.later(w.cleanup);
    const nbd = await startNbdkit(join(w.dir, 'nbd.sock'), ['memory', '0']);
    teardown.later(() => nbd.stop());
    const d = await countingListener();
    const s = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${d.port}`, '--image', nbd.uri(), '--ticket-file', w.ticket, '--state-dir', join(w.dir, 'st'), '--connect-timeout', '5']));
    const r = await exitWithin(s, 20_000);
    expect(r.code, s.stderr()).toBe(2);
    expectOneLineNoStack(s);
    expect(s.stderr()).toMatch(/empty/);
    expect(d.connections()).toBe(0);
  }, 30_000);
});

describe('case 8: a block device is an image', () => {
  it.skipIf(skipWithout(['losetup']))('a loop device as --image migrates whole (its size comes from sysfs, not fstat)', async () => {
    assertTools(['losetup']);
    const w = workDir('s-blockdev');
    teardown.later(w.cleanup);
    const backing = join(w.dir, 'backing.img');
    const dst = join(w.dir, 'dst.img');
    generateDemoImage(backing, 16 * MiB, 5);
    const dev = execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8' }).trim();
    teardown.later(() => void execFileSync('losetup', ['--detach', dev]));
    const port = await freePort();
    const dEvents = join(w.dir, 'd.jsonl');
    const dest = teardown.agent(startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', w.ticket, '--events', dEvents]));
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const source = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', dev, '--ticket-file', w.ticket, '--state-dir', join(w.dir, 'sstate')]));
    const [s, d] = await Promise.all([exitWithin(source, 60_000), exitWithin(dest, 60_000)]);
    expect(s.code, source.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    expect(statSync(dst).size).toBe(16 * MiB);
    expect((await compareImages(backing, dst)).ok).toBe(true);
  }, 90_000);
});

/** The real CLI run as another (unprivileged) user. */
function startAgentAs(user: string, args: string[]): Agent {
  return spawnWatched('runuser', ['-u', user, '--', process.execPath, CLI, ...args]);
}

/** A command line as the operator would paste it. */
function startShell(command: string): Agent {
  return spawnWatched('/bin/sh', ['-c', command]);
}

function spawnWatched(cmd: string, args: string[]): Agent {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POSTCOPY_LOG_LEVEL: 'info' } });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) => child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })));
  return { child, stderr: () => err, exit };
}

/** D and S over loopback on a pattern image, D slowed so the post-copy lasts (as in sigkill.test.ts). */
async function pair(prefix: string, opts: { sizeMiB?: number; sourceExtra?: string[] } = {}) {
  const w = workDir(prefix);
  teardown.later(w.cleanup);
  const src = join(w.dir, 'src.img');
  const dst = join(w.dir, 'dst.img');
  generateDemoImage(src, (opts.sizeMiB ?? 96) * MiB, 7);
  const port = await freePort();
  const dEvents = join(w.dir, 'd.jsonl');
  const sEvents = join(w.dir, 's.jsonl');
  const dest = teardown.agent(
    startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', w.ticket, '--bulk-window', '64K', '--progress-interval', '20', '--events', dEvents]),
  );
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  // No --state-dir: the default one is what these cases are about.
  const srcArgs = ['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket, '--events', sEvents, ...(opts.sourceExtra ?? [])];
  const source = teardown.agent(startAgent(srcArgs));
  return { w, src, dst, dest, source, srcArgs, dEvents, sEvents };
}

function exitEvent(path: string): Record<string, unknown> | undefined {
  return readEvents(path).filter((e) => e.event === 'exit').at(-1);
}

describe('case 10: S has a default state dir and resumes after a crash', () => {
  it('without --state-dir: SIGKILL after cut-over, the same command line resumes and completes', async () => {
    const p = await pair('s-default-state');
    const stateDir = `${p.src}.source-state`;
    expect(defaultSourceStateDir(p.src, false)).toBe(stateDir);
    await waitForEvent(p.sEvents, (e) => e.event === 'cutover', 60_000);
    // The state dir exists from the handshake on, owner-only: it holds the session's resume key.
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(readdirSync(stateDir)).toContain('source-session.json');
    p.source.child.kill('SIGKILL');
    await p.source.exit;
    const again = teardown.agent(startAgent(p.srcArgs));
    const [s, d] = await Promise.all([again.exit, p.dest.exit]);
    expect(s.code, again.stderr()).toBe(0);
    expect(d.code, p.dest.stderr()).toBe(0);
    expect(readEvents(p.sEvents).some((e) => e.event === 'phase' && e.restarted === true)).toBe(true);
    // The restarted S counts every block it has not sent itself as unsent; D's COMPLETE says it lacks nothing.
    expect(readEvents(p.sEvents).filter((e) => e.event === 'progress').at(-1)).toMatchObject({ phase: 'confirmed', bytesOnlyOnSource: 0 });
    expect((await compareImages(p.src, p.dst)).ok).toBe(true);
    // Nothing left to resume: the default dir goes once the destination confirmed.
    expect(existsSync(stateDir)).toBe(false);
  }, 180_000);

  it('the default state dir of S never names the one of D, and an NBD image has one too', () => {
    for (const img of ['/v/a.img', '/v/a.img.source-', '/v/a.img.source', '/v/a']) {
      for (const other of ['/v/a.img', '/v/a.img.source-', '/v/a.img.source', '/v/a', '/v/a.img.source-state']) {
        expect(defaultSourceStateDir(img, false)).not.toBe(`${other}.state`);
      }
    }
    const nbd = defaultSourceStateDir('nbd://host:10809/disk', true);
    expect(nbd).toMatch(/postcopy\/source\/host_10809_disk-[0-9a-f]{8}$/);
    expect(defaultSourceStateDir('nbd://host:10809/disk2', true)).not.toBe(nbd);
  });
});

describe('case 11: Ctrl-C / SIGTERM on S', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} before cut-over: ABORT, exit 3 at once, and D exits 3 promptly`, async () => {
      // A guest that never converges keeps S in the pre-copy long after the signal lands.
      const p = await pair(`s-${sig}-before`, { sizeMiB: 8, sourceExtra: ['--guest', 'sim', '--ram', '32M', '--dirty-rate', '50000', '--max-downtime', '1'] });
      await waitForEvent(p.sEvents, (e) => e.event === 'phase' && e.phase === 'perform', 60_000);
      const sentAt = Date.now();
      p.source.child.kill(sig);
      const s = await exitWithin(p.source, 20_000);
      expect(s.code, p.source.stderr()).toBe(3);
      expect(s.at - sentAt).toBeLessThan(5_000);
      expect(exitEvent(p.sEvents)?.code).toBe(3);
      expect(p.source.stderr()).toMatch(new RegExp(`stopped by ${sig} before cut-over.*the guest stays here`));
      const d = await exitWithin(p.dest, 20_000);
      expect(d.code, p.dest.stderr()).toBe(3);
      // D learned it from ABORT, not from a link timeout (its grace for a lost source is 30 s).
      expect(d.at - sentAt).toBeLessThan(10_000);
      expect(readEvents(p.dEvents).some((e) => e.event === 'phase' && e.phase === 'aborted' && /source aborted/.test(String(e.error)))).toBe(true);
      expect(existsSync(p.dst)).toBe(false);
      expect(existsSync(`${p.src}.source-state`)).toBe(false);
    }, 120_000);
  }

  it('SIGTERM while still reaching the destination: exit 3 at once, nothing started', async () => {
    const w = workDir('s-term-connecting');
    teardown.later(w.cleanup);
    const image = join(w.dir, 'src.img');
    writeFileSync(image, Buffer.alloc(MiB, 9));
    const sEvents = join(w.dir, 's.jsonl');
    // Nothing listens there: S retries until --connect-timeout (an hour).
    const s = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${await freePort()}`, '--image', image, '--ticket-file', w.ticket, '--connect-timeout', '3600', '--events', sEvents]));
    await waitForEvent(sEvents, (e) => e.event === 'phase' && e.phase === 'connecting');
    const sentAt = Date.now();
    s.child.kill('SIGTERM');
    const r = await exitWithin(s, 20_000);
    expect(r.code, s.stderr()).toBe(3);
    expect(r.at - sentAt).toBeLessThan(5_000);
    expect(exitEvent(sEvents)?.code).toBe(3);
    expect(s.stderr()).toMatch(/stopped by SIGTERM before cut-over.*nothing was started on the destination/);
    expect(existsSync(`${image}.source-state`)).toBe(false);
  }, 60_000);

  it('after cut-over: the first SIGTERM is refused, the second exits 5 keeping state, and the printed command resumes', async () => {
    const p = await pair('s-term-after', { sizeMiB: 128 });
    await waitForEvent(p.sEvents, (e) => e.event === 'cutover', 60_000);
    p.source.child.kill('SIGTERM');
    await waitUntil(() => /SIGTERM refused/.test(p.source.stderr()), 'the refusal line');
    const refusal = p.source.stderr().split('\n').find((l) => /SIGTERM refused/.test(l))!;
    expect(refusal).toMatch(/the guest runs on the destination, and up to \d+ bytes .* exist only here/);
    expect(readEvents(p.sEvents).some((e) => e.event === 'signal' && e.action === 'refused' && Number(e.bytesOnlySource) > 0)).toBe(true);
    const stderrBefore = p.source.stderr().length;
    p.source.child.kill('SIGTERM');
    const s = await exitWithin(p.source, 20_000);
    expect(s.code, p.source.stderr()).toBe(5);
    expect(exitEvent(p.sEvents)?.code).toBe(5);
    // A run stopped early still says where its demand reads' time went.
    const stages = readEvents(p.sEvents).find((e) => e.event === 'stages')?.urgentStages as Record<string, { count: number }> | undefined;
    expect(Object.keys(stages ?? {})).toEqual(['received-to-read', 'read-to-socket', 'total']);
    const last = p.source.stderr().slice(stderrBefore).trim().split('\n').filter((l) => l.startsWith('postcopy source:'));
    expect(last).toHaveLength(1);
    expect(last[0]).toMatch(/stopped by SIGTERM after cut-over.*the guest runs on the destination.*exist only here.*state kept in .*resume with: /);
    const stateDir = `${p.src}.source-state`;
    expect(readdirSync(stateDir)).toContain('source-session.json');
    // D keeps the guest and waits for S; the printed command (same line, state dir explicit) finishes the job.
    expect(p.dest.child.exitCode).toBeNull();
    const command = /resume with: (.*) \(or, if this host/.exec(last[0]!)![1]!;
    expect(command).toContain(`--state-dir ${stateDir}`);
    const resumed = teardown.agent(startShell(command));
    const [s2, d] = await Promise.all([resumed.exit, p.dest.exit]);
    expect(s2.code, resumed.stderr()).toBe(0);
    expect(d.code, p.dest.stderr()).toBe(0);
    expect((await compareImages(p.src, p.dst)).ok).toBe(true);
  }, 180_000);
});


describe("case 9: the source's own options are checked before it connects", () => {
  const mistakes: Array<[string, (dir: string, image: string) => string[]]> = [
    ['--state-dir that is a file', (dir) => ['--state-dir', join(dir, 'ticket')]],
    ['--state-dir below a file', (dir) => ['--state-dir', join(dir, 'ticket', 'sub')]],
    ['--state-dir holding an unfinished session of another image', (dir) => {
      const other = join(dir, 'other-state');
      mkdirSync(other, { mode: 0o700 });
      const session = { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32), phase: 'postcopy', size: MiB, image: join(dir, 'other.img') };
      writeFileSync(join(other, 'source-session.json'), JSON.stringify(session));
      return ['--state-dir', other];
    }],
    ['--state-dir holding an unfinished session of another file once at this path', (dir, image) => {
      const other = join(dir, 'replaced-state');
      mkdirSync(other, { mode: 0o700 });
      const ticket = statSync(join(dir, 'ticket'));
      const session = { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32), phase: 'postcopy', size: MiB, image, identity: { dev: ticket.dev, ino: ticket.ino } };
      writeFileSync(join(other, 'source-session.json'), JSON.stringify(session));
      return ['--state-dir', other];
    }],
    ['--state-dir holding an unfinished session of this image at another size', (dir, image) => {
      const other = join(dir, 'sized-state');
      mkdirSync(other, { mode: 0o700 });
      const session = { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32), phase: 'postcopy', size: 2 * MiB, image };
      writeFileSync(join(other, 'source-session.json'), JSON.stringify(session));
      return ['--state-dir', other];
    }],
  ];
  for (const [what, extra] of mistakes) {
    it(`${what}: exit 2, one line, nothing reached or changed`, async () => {
      const w = workDir('s-options');
      teardown.later(w.cleanup);
      const image = join(w.dir, 'src.img');
      writeFileSync(image, Buffer.alloc(MiB, 3));
      const args = extra(w.dir, image);
      const before = snapshot(w.dir);
      const d = await countingListener();
      const s = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${d.port}`, '--image', image, '--ticket-file', w.ticket, '--connect-timeout', '5', ...args]));
      const r = await exitWithin(s, 20_000);
      expect(r.code, s.stderr()).toBe(2);
      expectOneLineNoStack(s);
      expect(d.connections()).toBe(0);
      expect(snapshot(w.dir)).toEqual(before);
    }, 30_000);
  }
});

/** Every file under dir with its size, mode and mtime (a mistake must change none of them). */
function snapshot(dir: string): Array<[string, number, number, number]> {
  return (readdirSync(dir, { recursive: true }) as string[]).sort().map((f) => {
    const st = statSync(join(dir, f));
    return [f, st.size, st.mode, st.mtimeMs];
  });
}
