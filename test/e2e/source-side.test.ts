// The source side as safe as the destination (issue 10, cases 8, 10, 11), with real processes:
// S checks its image before it connects; S has a default state dir that resumes after a crash; a stop
// request before cut-over aborts at once, after cut-over it is refused once and then exits 5 keeping state.
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { defaultSourceStateDir } from '../../src/source/source-state.js';
import { assertTools, skipWithout, startNbdkit } from '../nbd/helpers/tools.js';
import { CLI, freePort, readEvents, startAgent, waitForEvent, workDir, Teardown, type Agent } from './helpers/processes.js';

const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

/** Polls until cond() holds (no fixed sleeps), or fails after timeoutMs. */
async function until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

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
    chmodSync(w.ticket, 0o644);
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

/** The real CLI run as another (unprivileged) user. */
function startAgentAs(user: string, args: string[]): Agent {
  const child = spawn('runuser', ['-u', user, '--', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POSTCOPY_LOG_LEVEL: 'info' } });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) => child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })));
  return { child, stderr: () => err, exit };
}
