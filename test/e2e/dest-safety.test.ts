// Issue 10, cases 1-3, 4 (file modes) and 12, with real processes: D never truncates, overwrites or deletes a
// file it did not create in this session (the source's own image, an existing --image, a state dir left by
// another migration), what it creates is private, and while S is away after cut-over D says what is at stake.
import { spawn } from 'node:child_process';
import { appendFileSync, chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { assertTools, run, skipWithout } from '../nbd/helpers/tools.js';
import { CLI, expectOneLineRefusal, freePort, humanLines, readEvents, startAgent, waitForEvent, workDir, Teardown, type Agent, type EventLine } from './helpers/processes.js';
import { expectUnchanged, snapshotTree, treeChanges, type TreeSnapshot } from './helpers/tree-snapshot.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const teardown = new Teardown();
afterEach(() => teardown.run());

/** Event files are written by the agents under test; everything else in a work dir is the operator's. */
const notEvents = (rel: string) => rel.endsWith('.jsonl');

/** Nothing under the snapshot's root was added, removed or changed (content, size, mode, owner, mtime). */
function destArgs(port: number, image: string, ticket: string, more: string[] = []): string[] {
  return ['dest', '--listen', `127.0.0.1:${port}`, '--image', image, '--ticket-file', ticket, ...more];
}
function sourceArgs(port: number, image: string, ticket: string, more: string[] = []): string[] {
  return ['source', '--connect', `127.0.0.1:${port}`, '--image', image, '--ticket-file', ticket, '--connect-timeout', '5', ...more];
}
const start = (args: string[]): Agent => teardown.agent(startAgent(args));
const postcopyFraction = (e: EventLine) => (e.event === 'progress' && e.phase === 'postcopy' ? Number(e.blocksPresent) / Number(e.blocksTotal) : 0);

/** A work dir with S's image; D's image path, a free port and D's events file beside it. */
async function setup(prefix: string, imageMiB: number, seed: number) {
  const w = workDir(prefix);
  teardown.later(w.cleanup);
  const src = join(w.dir, 'src.img');
  generateDemoImage(src, imageMiB * MiB, seed);
  return { w, src, dst: join(w.dir, 'dst.img'), port: await freePort(), dEvents: join(w.dir, 'd.jsonl') };
}

/** Start D with an events file and wait until it listens. */
async function listeningDest(args: string[], events: string): Promise<Agent> {
  const dest = start([...args, '--events', events]);
  await waitForEvent(events, (e) => e.event === 'listening', 10_000);
  return dest;
}

/** D refuses at start: exit 2, one line naming `code`, never listening, and nothing under `dir` changed. */
async function expectRefusedAtStart(dir: string, args: string[], code: string, says: RegExp): Promise<void> {
  const before = snapshotTree(dir, notEvents);
  const events = join(dir, `refused-${randomBytes(4).toString('hex')}.jsonl`);
  const d = start([...args, '--events', events]);
  const { code: exitCode } = await d.exit;
  expect(exitCode, d.stderr()).toBe(2);
  expectOneLineRefusal(d.stderr(), code);
  expect(humanLines(d.stderr())[0]).toMatch(says);
  expect(readEvents(events).some((e) => e.event === 'listening'), 'D listened before refusing').toBe(false);
  expectUnchanged(before, snapshotTree(dir, notEvents), args.join(' '));
}

/** A migration of `src` into `dst` that D is SIGKILLed in the middle of post-copy (S killed too): D's state says postcopy. */
async function killedInPostcopy(w: { dir: string; ticket: string }, src: string, dst: string, dstate: string): Promise<void> {
  const port = await freePort();
  const dEvents = join(w.dir, 'first-d.jsonl');
  const dest = await listeningDest(destArgs(port, dst, w.ticket, ['--state-dir', dstate, '--bulk-window', '128K', '--progress-interval', '20']), dEvents);
  const source = start(sourceArgs(port, src, w.ticket, ['--state-dir', join(w.dir, 'sstate')]));
  await waitForEvent(dEvents, (e) => postcopyFraction(e) >= 0.05, 60_000);
  dest.child.kill('SIGKILL');
  source.child.kill('SIGKILL');
  await Promise.all([dest.exit, source.exit]);
}

describe('S and D given the same file on one host (case 1)', () => {
  beforeAll(() => {
    if (process.env.CI === 'true') assertTools(['mount', 'umount']);
  });

  const variants = ['the same path', 'a hard link', 'a symlink', 'a bind mount of its directory'] as const;
  it.each(variants)('through %s: both sides refuse with exit 2 and the image is untouched, even with --force', async (variant) => {
    const w = workDir('same-file');
    teardown.later(w.cleanup);
    const srcDir = join(w.dir, 'srcdir');
    mkdirSync(srcDir);
    const src = join(srcDir, 'src.img');
    generateDemoImage(src, 8 * MiB, 3);
    let dst = src;
    if (variant === 'a hard link') linkSync(src, (dst = join(w.dir, 'hard.img')));
    if (variant === 'a symlink') symlinkSync(src, (dst = join(w.dir, 'sym.img')));
    if (variant === 'a bind mount of its directory') {
      const mnt = join(w.dir, 'mnt');
      mkdirSync(mnt);
      const m = await run('mount', ['--bind', srcDir, mnt]);
      expect(m.code, m.stderr).toBe(0);
      teardown.later(async () => void (await run('umount', [mnt])));
      dst = join(mnt, 'src.img');
    }
    const before = snapshotTree(w.dir, notEvents);
    const port = await freePort();
    const dEvents = join(w.dir, 'd.jsonl');
    const dest = await listeningDest(destArgs(port, dst, w.ticket, ['--force']), dEvents);
    const source = start(sourceArgs(port, src, w.ticket));
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(d.code, dest.stderr()).toBe(2);
    expect(s.code, source.stderr()).toBe(2);
    expectOneLineRefusal(dest.stderr(), 'PC_ERR_SAME_IMAGE');
    expectOneLineRefusal(source.stderr(), 'PC_ERR_SAME_IMAGE');
    // D's default state dir (IMAGE.state) was made by D and is gone again: nothing under the work dir changed.
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });
});

describe("an existing file at D's --image (case 2)", () => {
  it('a non-empty file no session owns is refused at start, before listening, and left as it was', async () => {
    const w = workDir('exists');
    teardown.later(w.cleanup);
    const dst = join(w.dir, 'precious.img');
    writeFileSync(dst, randomBytes(MiB));
    chmodSync(dst, 0o640);
    await expectRefusedAtStart(w.dir, destArgs(await freePort(), dst, w.ticket), 'PC_ERR_IMAGE_EXISTS', /already exists: .* holds 1048576 bytes .*--force/);
  });

  it('an existing empty file is used, and a migration refused at Prepare leaves it as it was (not deleted)', async () => {
    const { w, src, dst, port, dEvents } = await setup('empty-existing', 8, 4);
    const wrongReplica = join(w.dir, 'replica.img');
    generateDemoImage(wrongReplica, 4 * MiB, 4);
    writeFileSync(dst, '');
    chmodSync(dst, 0o640);
    const before = snapshotTree(w.dir, notEvents);
    // A fallback of another size than S's image: Prepare fails after BEGIN.
    const dest = await listeningDest(destArgs(port, dst, w.ticket, ['--fallback', wrongReplica]), dEvents);
    const source = start(sourceArgs(port, src, w.ticket));
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(d.code, dest.stderr()).toBe(2);
    expect(s.code, source.stderr()).toBe(2);
    expectOneLineRefusal(dest.stderr(), 'PC_ERR_USAGE');
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });

  it.each([
    ['an existing empty file', 0, []],
    ['an existing non-empty file with --force', MiB, ['--force']],
  ])('%s, D killed before cut-over: the restarted D gives the file back as it was', async (_name, bytes, force) => {
    const { w, src, dst, port, dEvents } = await setup('existing-rollback', 16, 5);
    writeFileSync(dst, randomBytes(bytes));
    chmodSync(dst, 0o640);
    const dstate = join(w.dir, 'dstate');
    const args = destArgs(port, dst, w.ticket, [...force, '--state-dir', dstate]);
    // src.img is the simulated guest's disk (it writes there until cut-over); dst.img comes back with its bytes,
    // size, mode and owner, but D wrote it in between (its mtime moved). Everything else, state dirs included, is compared whole.
    const facts = () => {
      const t = snapshotTree(w.dir, (rel) => notEvents(rel) || rel === 'src.img');
      t.set('dst.img', t.get('dst.img')!.replace(/ mtime=\S+/, ''));
      return t;
    };
    const before = facts();
    const dest = await listeningDest(args, dEvents);
    // A guest whose RAM never converges keeps the migration in pre-copy for a while.
    const source = start(sourceArgs(port, src, w.ticket, ['--guest', 'sim', '--ram', '64M', '--dirty-rate', '50000', '--max-downtime', '1']));
    await waitForEvent(dEvents, (e) => e.event === 'ram-round', 30_000);
    dest.child.kill('SIGKILL');
    await dest.exit;
    expect(statSync(dst).size, 'the file took the source size').toBe(16 * MiB);
    expect((await source.exit).code, source.stderr()).toBe(3);
    // Its own events file: the killed D may have left a torn last line in the first one.
    const restarted = await listeningDest(args, join(w.dir, 'd2.jsonl'));
    expect(readEvents(join(w.dir, 'd2.jsonl')).find((e) => e.event === 'listening')?.phase).toBe('aborted');
    expect(existsSync(join(dstate, 'present.bitmap'))).toBe(false);
    restarted.child.kill('SIGTERM');
    await restarted.exit;
    expectUnchanged(before, facts());
  });
});

describe('a Prepare failure says what failed (case 9: no PC_ERR_STATE_DIR catch-all)', () => {
  it("the image's directory gone by BEGIN: the image step is named, the state dir is not blamed", async () => {
    const { w, src, port, dEvents } = await setup('prepare-fails', 8, 13);
    const imageDir = join(w.dir, 'images');
    mkdirSync(imageDir);
    const dest = await listeningDest(destArgs(port, join(imageDir, 'dst.img'), w.ticket, ['--state-dir', join(w.dir, 'dstate')]), dEvents);
    rmSync(imageDir, { recursive: true });
    const source = start(sourceArgs(port, src, w.ticket));
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect([s.code, d.code], dest.stderr() + source.stderr()).toEqual([3, 3]);
    const line = humanLines(dest.stderr()).join('\n');
    expect(line).toMatch(/creating the image failed: ENOENT/);
    expect(dest.stderr() + source.stderr()).not.toContain('state directory');
    expect(existsSync(join(w.dir, 'dstate')), 'the state dir D made is gone with the rollback').toBe(false);
  });
});

describe('a --state-dir left by another migration (case 3)', () => {
  it('after a finished migration: a restart, a source state dir and another image are each refused, nothing changes', async () => {
    const { w, src, dst, port, dEvents } = await setup('confirmed-state', 8, 6);
    const dest = await listeningDest(destArgs(port, dst, w.ticket), dEvents);
    const source = start(sourceArgs(port, src, w.ticket, ['--state-dir', join(w.dir, 'sstate')]));
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect([s.code, d.code], dest.stderr() + source.stderr()).toEqual([0, 0]);
    const p2 = await freePort();
    await expectRefusedAtStart(w.dir, destArgs(p2, dst, w.ticket), 'PC_ERR_STATE_DIR', /finished and was confirmed.*remove/);
    // S removed its own state dir once confirmed; one as a running S keeps it:
    mkdirSync(join(w.dir, 'sstate'), { mode: 0o700 });
    writeFileSync(join(w.dir, 'sstate', 'source-session.json'), '{}\n', { mode: 0o600 });
    await expectRefusedAtStart(w.dir, destArgs(p2, join(w.dir, 'new.img'), w.ticket, ['--state-dir', join(w.dir, 'sstate')]), 'PC_ERR_STATE_DIR', /source's state directory/);
    await expectRefusedAtStart(w.dir, destArgs(p2, join(w.dir, 'new.img'), w.ticket, ['--state-dir', `${dst}.state`]), 'PC_ERR_STATE_DIR', /not .*new\.img/);
  });

  it('a post-copy state whose image was grown, replaced or removed is refused with what was found; the file is left alone', async () => {
    const { w, src, dst } = await setup('postcopy-state', 64, 7);
    const dstate = join(w.dir, 'dstate');
    await killedInPostcopy(w, src, dst, dstate);
    const args = destArgs(await freePort(), dst, w.ticket, ['--state-dir', dstate]);
    renameSync(dst, join(w.dir, 'saved.img'));
    await expectRefusedAtStart(w.dir, args, 'PC_ERR_STATE_DIR', /dst\.img is missing/);
    copyFileSync(join(w.dir, 'saved.img'), dst);
    await expectRefusedAtStart(w.dir, args, 'PC_ERR_STATE_DIR', /is another file/);
    renameSync(join(w.dir, 'saved.img'), dst);
    appendFileSync(dst, randomBytes(MiB));
    await expectRefusedAtStart(w.dir, args, 'PC_ERR_STATE_DIR', /is now 68157440 bytes \(expected 67108864\)/);
  });

  it('a rolled-back state is refused, and a file now at --image is not deleted', async () => {
    const { w, src, dst, port, dEvents } = await setup('aborted-state', 16, 8);
    const dstate = join(w.dir, 'dstate');
    const dest = await listeningDest(destArgs(port, dst, w.ticket, ['--state-dir', dstate]), dEvents);
    const source = start(sourceArgs(port, src, w.ticket, ['--guest', 'sim', '--ram', '64M', '--dirty-rate', '50000', '--max-downtime', '1']));
    await waitForEvent(dEvents, (e) => e.event === 'ram-round', 30_000);
    source.child.kill('SIGKILL');
    // D rolls back and waits for S's resume (grace period) with its state saying "aborted": killed there.
    await waitForEvent(dEvents, (e) => e.event === 'phase' && e.phase === 'aborted', 10_000);
    dest.child.kill('SIGKILL');
    await Promise.all([dest.exit, source.exit]);
    writeFileSync(dst, 'a new file the operator put here\n');
    await expectRefusedAtStart(w.dir, destArgs(await freePort(), dst, w.ticket, ['--state-dir', dstate]), 'PC_ERR_STATE_DIR', /rolled back.*remove/);
  });

  it('a state dir D created is removed again when D stops with nothing in it', async () => {
    const w = workDir('empty-state');
    teardown.later(w.cleanup);
    const before = snapshotTree(w.dir, notEvents);
    const dEvents = join(w.dir, 'd.jsonl');
    const dest = await listeningDest(destArgs(await freePort(), join(w.dir, 'dst.img'), w.ticket), dEvents);
    expect(statSync(join(w.dir, 'dst.img.state')).isDirectory()).toBe(true);
    dest.child.kill('SIGTERM');
    const { code } = await dest.exit;
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
    expect(humanLines(dest.stderr())).toEqual([expect.stringContaining('no migration kept here')]);
    expect(readEvents(dEvents).find((e) => e.event === 'exit')?.code, 'the exit event has the exit code').toBe(code);
  });
});

describe.skipIf(skipWithout(['setpriv']))('what the agents create is private whatever the umask (case 4, file modes)', () => {
  beforeAll(() => assertTools(['setpriv']));

  it('under umask 000: state dirs 0700; state, resume key, bitmap, image and guest writes 0600; another user cannot read the key', async () => {
    const { w, src, dst, port, dEvents } = await setup('modes', 8, 9);
    chmodSync(w.dir, 0o755); // so that only the modes of what the agents create keep the other user out
    chmodSync(src, 0o644);
    const dstate = join(w.dir, 'dstate');
    const sstate = join(w.dir, 'sstate');
    const dest = teardown.agent(startUnderUmask(destArgs(port, dst, w.ticket, ['--state-dir', dstate, '--events', dEvents])));
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const source = teardown.agent(startUnderUmask(sourceArgs(port, src, w.ticket, ['--state-dir', sstate, '--guest', 'sim', '--ram', '16M'])));
    const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
    const asNobody = (p: string) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', p]);
    // S keeps its session (and resume key) only until D confirms: looked at while S is held stopped.
    const sourceSession = join(sstate, 'source-session.json');
    await waitUntil(() => existsSync(sourceSession), "S's session file", 30_000, 5);
    source.child.kill('SIGSTOP');
    const sourceModes = { sstate: mode(sstate), sourceSession: mode(sourceSession) };
    const nobodyOnSource = await asNobody(sourceSession);
    source.child.kill('SIGCONT');
    expect(sourceModes).toEqual({ sstate: '700', sourceSession: '600' });
    expect(nobodyOnSource.code, `nobody read ${sourceSession}`).not.toBe(0);
    expect(nobodyOnSource.stdout).not.toContain('resumeKey');
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect([s.code, d.code], dest.stderr() + source.stderr()).toEqual([0, 0]);
    expect({
      dstate: mode(dstate),
      session: mode(join(dstate, 'dest-session.json')),
      bitmap: mode(join(dstate, 'present.bitmap')),
      writes: mode(join(dstate, 'guest-writes.json')),
      image: mode(dst),
    }).toEqual({ dstate: '700', session: '600', bitmap: '600', writes: '600', image: '600' });
    // A real second user: reads a world-readable file next to them, but not the resume key.
    expect((await asNobody(src)).code, 'the control read as nobody').toBe(0);
    const r = await asNobody(join(dstate, 'dest-session.json'));
    expect(r.code, 'nobody read the dest session').not.toBe(0);
    expect(r.stdout).not.toContain('resumeKey');
    // Even with the directory opened up, the file itself stays closed to others.
    chmodSync(dstate, 0o755);
    expect((await asNobody(join(dstate, 'dest-session.json'))).code).not.toBe(0);
  });
});

describe('while S is away after cut-over, D says what exists only on S (case 12)', () => {
  it('reports at the given interval how many bytes exist only on S and what to do; S back, it completes', async () => {
    const { w, src, dst, port, dEvents } = await setup('away', 64, 10);
    const dest = await listeningDest(destArgs(port, dst, w.ticket, ['--bulk-window', '128K', '--progress-interval', '20', '--away-report-interval', '200']), dEvents);
    const sArgs = sourceArgs(port, src, w.ticket, ['--state-dir', join(w.dir, 'sstate')]);
    const source = start(sArgs);
    await waitForEvent(dEvents, (e) => postcopyFraction(e) >= 0.05, 60_000);
    source.child.kill('SIGKILL');
    const killedAt = Date.now();
    await source.exit;
    await waitForEvent(dEvents, (e) => e.event === 'source-away' && Number(e.awayMs) >= 1000, 10_000);
    const reports = readEvents(dEvents).filter((e) => e.event === 'source-away');
    // Bounded: about one per 200 ms (the first one interval after the loss), never a flood.
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports.length).toBeLessThanOrEqual(Math.ceil((Date.now() - killedAt) / 200) + 1);
    for (const r of reports) {
      expect(Number(r.bytesOnlyOnSource)).toBeGreaterThan(0);
      expect(r.fallback).toBe('none');
    }
    expect(dest.stderr()).toMatch(/source away for \d+s: \d+ bytes exist only on the source; restart the source with its --state-dir to resume, or restart this destination with --fallback/);
    const back = start(sArgs);
    const [s, d] = await Promise.all([back.exit, dest.exit]);
    expect([s.code, d.code], dest.stderr() + back.stderr()).toEqual([0, 0]);
    expect((await compareImages(src, dst)).ok).toBe(true);
  });

  it('D restarted after cut-over with S gone for good: its --fallback is armed, serves, and D completes', async () => {
    const { w, src, dst, port, dEvents } = await setup('away-restart', 64, 12);
    const replica = join(w.dir, 'replica.img');
    copyFileSync(src, replica);
    const dstate = join(w.dir, 'dstate');
    await killedInPostcopy(w, src, dst, dstate);
    const dest = start(
      destArgs(port, dst, w.ticket, [
        '--state-dir', dstate, '--fallback', replica, '--fallback-after', '1', '--confirm-timeout', '1', '--events', dEvents,
      ]),
    );
    await waitForEvent(dEvents, (e) => e.event === 'fallback' && e.active === true, 10_000);
    const d = await dest.exit;
    expect(d.code, dest.stderr()).toBe(0);
    expect((await compareImages(src, dst)).ok).toBe(true);
    expect(Number(readEvents(dEvents).find((e) => e.event === 'complete')!.bytesFromFallback)).toBeGreaterThan(0);
  });
});

/** startAgent, but the agent runs under umask 000 (so only the modes the agent sets itself protect its files). */
function startUnderUmask(args: string[]): Agent {
  const child = spawn('/bin/sh', ['-c', 'umask 000 && exec "$@"', 'sh', process.execPath, ...AGENT_NODE_FLAGS, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, POSTCOPY_LOG_LEVEL: 'info' },
  });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) => child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })));
  return { child, stderr: () => err, exit };
}
