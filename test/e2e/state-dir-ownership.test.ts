// Review items 1, 5, 6 and 9a of issue 10, with real processes and a real second user (nobody, uid 65534): a
// state dir another user made (the default names IMAGE.state / IMAGE.source-state are predictable) or may write
// is refused by D and S (exit 2, one line) before anything in it is read or written; a symlink left in a state
// dir is replaced, never written through; a resume without its bitmap is one line; a rollback completes even
// when the state dir cannot be written.
import { chmodSync, existsSync, lstatSync, mkdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { assertTools, run, skipWithout } from '../nbd/helpers/tools.js';
import { expectOneLineRefusal, freePort, humanLines, readEvents, startAgent, waitForEvent, workDir, Teardown, type Agent } from './helpers/processes.js';
import { expectUnchanged, snapshotTree } from './helpers/tree-snapshot.js';

const MiB = 1024 * 1024;
const teardown = new Teardown();
afterEach(() => teardown.run());
const start = (args: string[]): Agent => teardown.agent(startAgent(args));
const notEvents = (name: string) => name.endsWith('.jsonl');

function destArgs(port: number, image: string, ticket: string, more: string[] = []): string[] {
  return ['dest', '--listen', `127.0.0.1:${port}`, '--image', image, '--ticket-file', ticket, ...more];
}
function sourceArgs(port: number, image: string, ticket: string, more: string[] = []): string[] {
  return ['source', '--connect', `127.0.0.1:${port}`, '--image', image, '--ticket-file', ticket, '--connect-timeout', '5', ...more];
}

/** Run a shell script as nobody (a real second user, no supplementary groups). */
async function asNobody(script: string): Promise<void> {
  const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c', script]);
  expect(r.code, r.stderr).toBe(0);
}

/**
 * A work dir as on a shared host: the operator's files (two victims a planted link may point at) beside a
 * world-writable sticky directory (like /tmp) where the images live and nobody can get in first.
 */
function sharedSetup(prefix: string) {
  const w = workDir(prefix);
  teardown.later(w.cleanup);
  chmodSync(w.dir, 0o711);
  const shared = join(w.dir, 'shared');
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  const victims = [join(w.dir, 'victim-1'), join(w.dir, 'victim-2')];
  for (const v of victims) writeFileSync(v, `the operator's ${v}\n`, { mode: 0o644 });
  return { w, shared, victims };
}

describe.skipIf(skipWithout(['setpriv']))('a state dir another user made or may write is refused (review item 1)', () => {
  beforeAll(() => assertTools(['setpriv']));

  it("D: nobody made IMAGE.state first with symlinks to the operator's files: exit 2 before listening, nothing written, chmodded or deleted", async () => {
    const { w, shared, victims } = sharedSetup('sd-planted-links');
    const dst = join(shared, 'dst.img');
    await asNobody(`mkdir ${dst}.state && ln -s ${victims[0]} ${dst}.state/dest-session.json.tmp && ln -s ${victims[1]} ${dst}.state/present.bitmap`);
    const before = snapshotTree(w.dir, notEvents);
    const events = join(w.dir, 'd.jsonl');
    const d = start([...destArgs(await freePort(), dst, w.ticket), '--events', events]);
    expect((await d.exit).code, d.stderr()).toBe(2);
    expectOneLineRefusal(d.stderr(), 'PC_ERR_STATE_DIR');
    expect(humanLines(d.stderr())[0]).toMatch(/owned by uid 65534.*another --state-dir/);
    expect(readEvents(events).some((e) => e.event === 'listening')).toBe(false);
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });

  it('D: nobody planted a session file (phase prepared, created: true, identity of an existing image): the image is not deleted, exit 2', async () => {
    const { w, shared } = sharedSetup('sd-planted-session');
    const dst = join(shared, 'dst.img');
    writeFileSync(dst, Buffer.alloc(MiB, 7), { mode: 0o644 });
    const st = statSync(dst, { bigint: true });
    const session = {
      kind: 'postcopy-dest-session/2', sessionId: 'planted', resumeKey: '00'.repeat(32), phase: 'prepared', size: MiB, blockSize: 65536,
      imagePath: dst, image: { created: true, identity: { dev: st.dev.toString(), ino: st.ino.toString() }, priorSize: 0 }, stateDirCreated: false,
    };
    writeFileSync(join(w.dir, 'planted.json'), JSON.stringify(session));
    await asNobody(`mkdir ${dst}.state && cat ${join(w.dir, 'planted.json')} > ${dst}.state/dest-session.json`);
    rmSync(join(w.dir, 'planted.json'));
    const before = snapshotTree(w.dir, notEvents);
    const d = start(destArgs(await freePort(), dst, w.ticket, ['--force']));
    expect((await d.exit).code, d.stderr()).toBe(2);
    expectOneLineRefusal(d.stderr(), 'PC_ERR_STATE_DIR');
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });

  it('D: a state dir of ours that group/others may write (0777) is refused too, and left as it was', async () => {
    const { w, shared, victims } = sharedSetup('sd-world-writable');
    const sd = join(w.dir, 'sd');
    mkdirSync(sd);
    chmodSync(sd, 0o777);
    await asNobody(`ln -s ${victims[0]} ${sd}/dest-session.json.tmp`);
    const before = snapshotTree(w.dir, notEvents);
    const d = start(destArgs(await freePort(), join(shared, 'dst.img'), w.ticket, ['--state-dir', sd]));
    expect((await d.exit).code, d.stderr()).toBe(2);
    expectOneLineRefusal(d.stderr(), 'PC_ERR_STATE_DIR');
    expect(humanLines(d.stderr())[0]).toMatch(/writable by others \(mode 777\).*chmod 700/);
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });

  it("S: nobody made IMAGE.source-state first with a symlink to the operator's file: exit 2 before connecting, nothing written or chmodded", async () => {
    const { w, shared, victims } = sharedSetup('ss-planted-link');
    const src = join(shared, 'src.img');
    generateDemoImage(src, 2 * MiB, 3);
    await asNobody(`mkdir ${src}.source-state && ln -s ${victims[0]} ${src}.source-state/source-session.json.tmp`);
    const dEvents = join(w.dir, 'd.jsonl');
    const port = await freePort();
    start([...destArgs(port, join(w.dir, 'dst.img'), w.ticket, ['--state-dir', join(w.dir, 'dstate')]), '--events', dEvents]);
    await waitForEvent(dEvents, (e) => e.event === 'listening', 10_000);
    const before = snapshotTree(w.dir, (n) => notEvents(n) || n === 'dstate');
    const s = start(sourceArgs(port, src, w.ticket));
    expect((await s.exit).code, s.stderr()).toBe(2);
    expectOneLineRefusal(s.stderr(), 'PC_ERR_STATE_DIR');
    expect(humanLines(s.stderr())[0]).toMatch(/owned by uid 65534/);
    expect(readEvents(dEvents).some((e) => e.event === 'phase'), 'S reached D').toBe(false);
    expectUnchanged(before, snapshotTree(w.dir, (n) => notEvents(n) || n === 'dstate'));
  });
});

describe('a symlink left in our own state dir is replaced, never written through (review item 1, 9a)', () => {
  it('a whole migration with links at the state files of both sides: the linked files are untouched, S leaves the mode of its existing dir alone', async () => {
    const w = workDir('own-links');
    teardown.later(w.cleanup);
    const victims = ['v-tmp', 'v-bitmap', 'v-writes', 'v-source'].map((n) => join(w.dir, 'victims', n));
    mkdirSync(join(w.dir, 'victims'));
    for (const v of victims) writeFileSync(v, `the operator's ${v}\n`, { mode: 0o644 });
    const src = join(w.dir, 'src.img');
    generateDemoImage(src, 4 * MiB, 5);
    const dst = join(w.dir, 'dst.img');
    const dstate = join(w.dir, 'dstate');
    mkdirSync(dstate, { mode: 0o700 });
    symlinkSync(victims[0]!, join(dstate, 'dest-session.json.tmp'));
    symlinkSync(victims[1]!, join(dstate, 'present.bitmap'));
    symlinkSync(victims[2]!, join(dstate, 'guest-writes.json'));
    // S's default state dir exists already, ours, 0750: S must not chmod it (9a).
    const sstate = `${src}.source-state`;
    mkdirSync(sstate);
    chmodSync(sstate, 0o750);
    symlinkSync(victims[3]!, join(sstate, 'source-session.json.tmp'));
    const before = snapshotTree(join(w.dir, 'victims'));
    const port = await freePort();
    const dEvents = join(w.dir, 'd.jsonl');
    const d = start([...destArgs(port, dst, w.ticket, ['--state-dir', dstate]), '--events', dEvents]);
    await waitForEvent(dEvents, (e) => e.event === 'listening', 10_000);
    const s = start(sourceArgs(port, src, w.ticket, ['--guest', 'sim', '--ram', '4M']));
    let sstateMode = -1;
    const sawState = (async () => {
      const deadline = Date.now() + 60_000;
      while (!existsSync(join(sstate, 'source-session.json')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      sstateMode = lstatSync(sstate).mode & 0o777;
    })();
    const [dx, sx] = await Promise.all([d.exit, s.exit]);
    await sawState;
    expect(dx.code, d.stderr()).toBe(0);
    expect(sx.code, s.stderr()).toBe(0);
    expect(sstateMode.toString(8), "mode of S's existing state dir during the migration").toBe('750');
    expectUnchanged(before, snapshotTree(join(w.dir, 'victims')));
  });
});

const postcopyFraction = (e: { event: string; phase?: unknown; blocksPresent?: unknown; blocksTotal?: unknown }) =>
  e.event === 'progress' && e.phase === 'postcopy' ? Number(e.blocksPresent) / Number(e.blocksTotal) : 0;

/** A work dir with S's image, D listening with its own --state-dir (prepared by `before`), then S started. */
async function migration(prefix: string, o: { imageMiB: number; seed: number; dest?: string[]; source?: string[]; before?: (dstate: string) => void }) {
  const w = workDir(prefix);
  teardown.later(w.cleanup);
  const src = join(w.dir, 'src.img');
  generateDemoImage(src, o.imageMiB * MiB, o.seed);
  const dst = join(w.dir, 'dst.img');
  const dstate = join(w.dir, 'dstate');
  o.before?.(dstate);
  const srcBefore = snapshotTree(w.dir, (n) => n !== 'src.img');
  const port = await freePort();
  const dEvents = join(w.dir, 'first-d.jsonl');
  const d = start([...destArgs(port, dst, w.ticket, ['--state-dir', dstate, ...(o.dest ?? [])]), '--events', dEvents]);
  await waitForEvent(dEvents, (e) => e.event === 'listening', 10_000);
  const s = start(sourceArgs(port, src, w.ticket, ['--state-dir', join(w.dir, 'sstate'), ...(o.source ?? [])]));
  return { w, dst, dstate, dEvents, d, s, srcBefore };
}

/** A directory where the session file's temporary goes: every save fails from now on (EISDIR), as on a broken disk. */
function breakSaves(dstate: string): void {
  mkdirSync(join(dstate, 'dest-session.json.tmp'), { recursive: true });
  writeFileSync(join(dstate, 'dest-session.json.tmp', 'keep'), 'x');
}

/** Both exit codes; D is killed after 30 s (the old code never exited after some failed rollbacks). */
async function exits(d: Agent, s: Agent): Promise<[number | null, number | null]> {
  const timer = setTimeout(() => d.child.kill('SIGKILL'), 30_000);
  const [dx, sx] = await Promise.all([d.exit, s.exit]);
  clearTimeout(timer);
  return [dx.code, sx.code];
}

describe('a resume whose present.bitmap is gone (review item 5)', () => {
  it('D restarted after cut-over without its bitmap: exit 2, one line saying what is missing and what it means, nothing changed', async () => {
    const { w, dst, dstate, dEvents, d, s } = await migration('no-bitmap', { imageMiB: 64, seed: 11, dest: ['--bulk-window', '128K', '--progress-interval', '20'] });
    await waitForEvent(dEvents, (e) => postcopyFraction(e) >= 0.05, 60_000);
    d.child.kill('SIGKILL');
    s.child.kill('SIGKILL');
    await Promise.all([d.exit, s.exit]);
    rmSync(join(dstate, 'present.bitmap'));
    const before = snapshotTree(w.dir, notEvents);
    const again = start([...destArgs(await freePort(), dst, w.ticket, ['--state-dir', dstate]), '--events', join(w.dir, 'again.jsonl')]);
    expect((await again.exit).code, again.stderr()).toBe(2);
    expectOneLineRefusal(again.stderr(), 'PC_ERR_STATE_DIR');
    expect(humanLines(again.stderr())[0]).toMatch(/present\.bitmap is missing: D cannot tell which blocks .* it already holds/);
    expect(readEvents(join(w.dir, 'again.jsonl')).some((e) => e.event === 'listening')).toBe(false);
    expectUnchanged(before, snapshotTree(w.dir, notEvents));
  });
});

describe('a rollback when the state dir cannot be written (review item 6)', () => {
  it('Prepare fails saving the session and the rollback cannot save either: D still rolls back (exit 3), S is told (exit 3), no image is left', async () => {
    const before = (dstate: string) => {
      mkdirSync(dstate, { mode: 0o700 });
      breakSaves(dstate);
    };
    const { w, dst, dstate, dEvents, d, s, srcBefore } = await migration('unsavable', { imageMiB: 4, seed: 12, before });
    const [dCode, sCode] = await exits(d, s);
    expect(dCode, d.stderr()).toBe(3);
    expect(sCode, s.stderr()).toBe(3);
    expect(readEvents(dEvents).filter((e) => e.event === 'phase' && e.phase === 'aborted')).toHaveLength(1);
    expect(existsSync(dst), 'the image this session created').toBe(false);
    expect(existsSync(join(dstate, 'present.bitmap'))).toBe(false);
    expectUnchanged(srcBefore, snapshotTree(w.dir, (n) => n !== 'src.img'));
  });

  it("S aborts in pre-copy after D's state dir stopped taking writes: D's rollback from the message handler completes, D exits 3", async () => {
    // A guest that never converges keeps the migration in pre-copy.
    const source = ['--guest', 'sim', '--ram', '32M', '--dirty-rate', '50000', '--max-downtime', '1'];
    const { dst, dstate, dEvents, d, s } = await migration('unsavable-abort', { imageMiB: 8, seed: 13, source });
    await waitForEvent(dEvents, (e) => e.event === 'ram-round', 30_000);
    breakSaves(dstate);
    s.child.kill('SIGTERM');
    const [dCode, sCode] = await exits(d, s);
    expect(sCode, s.stderr()).toBe(3);
    expect(dCode, d.stderr()).toBe(3);
    expect(existsSync(dst), 'the image this session created').toBe(false);
  }, 60_000);
});
