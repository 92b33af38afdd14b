// A real QEMU guest migrated end to end: the test guest boots on S with its disk on S's image, keeps writing
// and checking its disk while `postcopy source/dest --guest qemu` move it to D with post-copy storage; its
// own checksums, its console on D, D's final image, the source QEMU's exit and S's exit code are verified.
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, existsSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { TcpProxy } from '../nbd/helpers/tcp-proxy.js';
import { freePort, humanLines, readEvents, startAgent, waitForEvent, workDir, type Agent } from '../e2e/helpers/processes.js';
import {
  SerialWatcher,
  assertQemu,
  buildTestGuest,
  destTemplate,
  skipQemu,
  startSourceQemu,
  type GuestParams,
  type RunningQemu,
  type TestGuest,
} from './helpers/qemu.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const IMAGE_BYTES = 160 * MiB;
/**
 * The guest rewrites 4 MiB at 120 MiB, far past where D's background stream starts, so its first reads on D
 * are demand fetches; it polls a flag block at 150 MiB.
 */
const PARAMS: GuestParams = { base: (120 * MiB) / BLOCK, blocks: 1024, flag: (150 * MiB) / BLOCK, iters: 3000, delay: 0.02 };
/** Loop iterations on D before the host ends the loop. */
const LOOPS_ON_DEST = 12;

let guest: TestGuest;
let cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

interface Outcome {
  guestPauseMs: number;
  downtimeMs: number;
  qemu: Record<string, unknown>;
  relay: Record<string, unknown>;
  demandBytes: number;
  bulkBytes: number;
  wallMs: number;
  sourceReconnects: number;
}

async function migrateGuest(opts: { postcopyRam: boolean; cutLinkAfterCutover?: boolean }): Promise<Outcome> {
  const t = workDir('qemu');
  cleanups.push(t.cleanup);
  const src = join(t.dir, 'src.img');
  const dst = join(t.dir, 'dst.img');
  const sEvents = join(t.dir, 's.jsonl');
  const dEvents = join(t.dir, 'd.jsonl');
  makeImage(src);

  // S's guest: boots on its own image and runs its loop before anything else starts.
  const sq = startSourceQemu(guest, PARAMS, { image: src, qmp: join(t.dir, 'src.qmp'), serial: join(t.dir, 'src-serial.log') });
  cleanups.push(() => kill(sq));
  const serial = new SerialWatcher(join(t.dir, 'src-serial.log'));
  cleanups.push(() => serial.stop());
  await serial.waitFor((l) => l.text.startsWith('LOOP i=3 '), 60_000, 'LOOP on the source');

  const port = await freePort();
  const nbdSocket = join(t.dir, 'nbd.sock');
  const dest = startAgent([
    'dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket, '--events', dEvents,
    '--nbd-socket', nbdSocket, '--bulk-window', '256K', '--guest', 'qemu', '--qemu-cmd', destTemplate(guest, PARAMS),
  ]);
  cleanups.push(() => killAgent(dest));
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const proxy = opts.cutLinkAfterCutover ? await TcpProxy.start({ host: '127.0.0.1', port }) : null;
  if (proxy) cleanups.push(() => proxy.close());

  const started = Date.now();
  const source = startAgent([
    'source', '--connect', `127.0.0.1:${proxy?.port ?? port}`, '--image', src, '--ticket-file', t.ticket, '--events', sEvents,
    '--guest', 'qemu', '--qmp', join(t.dir, 'src.qmp'), ...(opts.postcopyRam ? ['--postcopy-ram'] : []),
  ]);
  cleanups.push(() => killAgent(source));
  const qemuStarted = await waitForEvent(dEvents, (e) => e.event === 'hypervisor' && e.state === 'started', 30_000);
  serial.setDest(String(qemuStarted.serial));
  cleanups.push(() => killPid(Number(qemuStarted.pid)));

  await waitForEvent(dEvents, (e) => e.event === 'cutover', 60_000);
  // At once: D's background stream (256K window) still has most of the image to pull.
  proxy?.cutAll();

  const s = await withTimeout(source.exit, 90_000, 'source agent exit');
  expect(s.code, source.stderr()).toBe(0);
  const wallMs = Date.now() - started;
  expect(readEvents(sEvents).some((e) => e.event === 'complete')).toBe(true);
  // Shutting the source down is quitting its QEMU.
  const sqExit = await withTimeout(sq.exit, 10_000, 'source QEMU exit');
  expect(sqExit.code, sq.stderr()).toBe(0);

  // The guest goes on writing on D; then the host ends its loop through D's export.
  await serial.waitFor((l) => l.log === 'dest' && l.text.startsWith('LOOP ') && serial.loops('dest').length >= LOOPS_ON_DEST, 60_000, `${LOOPS_ON_DEST} LOOPs on D`);
  await setStopFlag(nbdSocket);
  const done = await serial.waitFor((l) => l.text.startsWith('DONE '), 60_000, 'DONE');
  await waitForEvent(dEvents, (e) => e.event === 'hypervisor' && e.state === 'exited', 30_000);
  dest.child.kill('SIGTERM');
  const d = await withTimeout(dest.exit, 20_000, 'dest agent exit');
  expect(d.code, dest.stderr()).toBe(0);

  // The guest's own checks: every write read back intact, and older blocks too, on S and on D.
  expect(serial.lines.filter((l) => l.text.startsWith('MISMATCH'))).toEqual([]);
  const m = /^DONE i=(\d+) bad=(\d+) shadow=([0-9a-f]{32}) disk=([0-9a-f]{32})$/.exec(done.text);
  expect(m, done.text).not.toBeNull();
  expect(m![2]).toBe('0');
  expect(m![4]).toBe(m![3]);
  // Its output continued on D, iteration after iteration with none lost or repeated.
  const loops = serial.loops().map((l) => Number(/i=(\d+)/.exec(l.text)![1]));
  expect(loops).toEqual(loops.map((_, k) => loops[0]! + k));
  expect(serial.loops('source').length).toBeGreaterThan(0);
  expect(serial.loops('dest').length).toBeGreaterThanOrEqual(LOOPS_ON_DEST);
  // D's final image holds what the guest believes its disk holds; the rest equals S's image.
  expect(md5(dst, PARAMS.base * BLOCK, PARAMS.blocks * BLOCK)).toBe(m![3]);
  expect(md5(dst, 0, PARAMS.base * BLOCK)).toBe(md5(src, 0, PARAMS.base * BLOCK));
  const tail = (PARAMS.base + PARAMS.blocks) * BLOCK;
  expect(md5(dst, tail, PARAMS.flag * BLOCK - tail)).toBe(md5(src, tail, PARAMS.flag * BLOCK - tail));

  const lastOnS = serial.loops('source').at(-1)!;
  const firstOnD = serial.loops('dest')[0]!;
  const sSummary = readEvents(sEvents).find((e) => e.event === 'summary')!;
  const dSummary = readEvents(dEvents).find((e) => e.event === 'summary')!;
  const hv = sSummary.hypervisor as { qemu: Record<string, unknown>; relay: Record<string, unknown> };
  const outcome: Outcome = {
    guestPauseMs: firstOnD.at - lastOnS.at,
    downtimeMs: Number(sSummary.downtimeMs),
    qemu: hv.qemu,
    relay: hv.relay,
    demandBytes: Number(dSummary.bytesFetchedDemand),
    bulkBytes: Number(dSummary.bytesFetchedBulk),
    wallMs,
    sourceReconnects: Number(sSummary.reconnects),
  };
  console.log(`qemu migration (postcopy-ram ${opts.postcopyRam}${proxy ? ', link cut' : ''}): ${JSON.stringify(outcome)}`);
  return outcome;
}

// A retry, measured not guessed: the destination guest's kernel sometimes panics right after QEMU's own RAM
// pre-copy under TCG on this 2-vCPU machine (general protection fault in kmem_cache_alloc, "Oops" in an interrupt),
// before it touched its disk: 1 of 9 runs of the "precopy RAM" test on 744877c, 2 of 10 on this tree, side by side
// under the same load. QEMU's stream crosses our link in CRC-checked frames, in order; a failure that repeats still fails.
describe.skipIf(skipQemu())('a QEMU guest migrated through postcopy', { retry: 2 }, () => {
  beforeAll(() => {
    assertQemu();
    guest = buildTestGuest();
  }, 300_000);

  it('precopy RAM: the guest keeps writing, continues on D, D holds its disk; S quits QEMU and exits 0', async () => {
    const o = await migrateGuest({ postcopyRam: false });
    expect(o.qemu.status).toBe('completed');
    expect(o.qemu.postcopyStarted).toBe(false);
  }, 240_000);

  it("QEMU's postcopy-ram: same checks, RAM sent after the switch", async () => {
    const o = await migrateGuest({ postcopyRam: true });
    expect(o.qemu.postcopyStarted).toBe(true);
    expect(Number(o.qemu.postcopyBytes)).toBeGreaterThan(0);
  }, 240_000);

  it('the destination QEMU dies before Finish: S rolls back and its guest runs on; D kept nothing', async () => {
    await rollbackWhenDestQemuDies();
  }, 240_000);

  it('a QMP socket that is not there: one clear line, exit 4, nothing started', async () => {
    const t = workDir('qemu-qmp');
    cleanups.push(t.cleanup);
    // A real image (S refuses an empty one or a character device before anything else).
    const image = join(t.dir, 'img');
    writeFileSync(image, Buffer.alloc(65536, 1));
    const source = startAgent(['source', '--connect', '127.0.0.1:9', '--image', image, '--ticket-file', t.ticket, '--guest', 'qemu', '--qmp', join(t.dir, 'none.qmp')]);
    const s = await source.exit;
    expect(s.code).toBe(4);
    const lines = humanLines(source.stderr());
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^postcopy source: hypervisor \(QEMU\) failed: QMP .*none\.qmp: .*ENOENT.* \[PC_ERR_HYPERVISOR\]$/);
  });

  it('the link is cut once after cut-over: S reconnects and the migration still completes intact', async () => {
    const o = await migrateGuest({ postcopyRam: false, cutLinkAfterCutover: true });
    expect(o.sourceReconnects).toBeGreaterThanOrEqual(1);
  }, 240_000);
});

/** The destination QEMU dies while the stream flows: S rolls back, its guest runs on; D keeps nothing. */
async function rollbackWhenDestQemuDies(): Promise<void> {
  const t = workDir('qemu-rb');
  cleanups.push(t.cleanup);
  const src = join(t.dir, 'src.img');
  const dst = join(t.dir, 'dst.img');
  const dEvents = join(t.dir, 'd.jsonl');
  makeImage(src);
  const sq = startSourceQemu(guest, PARAMS, { image: src, qmp: join(t.dir, 'src.qmp'), serial: join(t.dir, 'src-serial.log') });
  cleanups.push(() => kill(sq));
  const serial = new SerialWatcher(join(t.dir, 'src-serial.log'));
  cleanups.push(() => serial.stop());
  await serial.waitFor((l) => l.text.startsWith('LOOP i=3 '), 60_000, 'LOOP on the source');
  const port = await freePort();
  const dest = startAgent([
    'dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket, '--events', dEvents,
    '--nbd-socket', join(t.dir, 'nbd.sock'), '--guest', 'qemu', '--qemu-cmd', destTemplate(guest, PARAMS),
  ]);
  cleanups.push(() => killAgent(dest));
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', t.ticket, '--guest', 'qemu', '--qmp', join(t.dir, 'src.qmp')]);
  cleanups.push(() => killAgent(source));
  const started = await waitForEvent(dEvents, (e) => e.event === 'hypervisor' && e.state === 'started', 30_000);
  cleanups.push(() => killPid(Number(started.pid)));
  await waitForEvent(dEvents, (e) => e.event === 'phase' && e.phase === 'receiving-ram', 30_000);
  await new Promise((r) => setTimeout(r, 200));
  killPid(Number(started.pid));

  const [s, d] = await Promise.all([withTimeout(source.exit, 60_000, 'source exit'), withTimeout(dest.exit, 60_000, 'dest exit')]);
  expect(s.code, source.stderr()).toBe(3);
  expect(d.code, dest.stderr()).toBe(3);
  // One clear line each, naming what failed.
  // S usually names D's reason (D's ABORT); when S's write meets the closed link first, it names the link.
  expect(source.stderr()).toMatch(/postcopy source: rolled back in phase \S+ \(.*(the destination QEMU exited \(killed by SIGKILL\)|migration link closed).*\); the guest stays here/);
  expect(dest.stderr()).toMatch(/postcopy dest: migration rolled back \(.*the destination QEMU exited \(killed by SIGKILL\).*\); nothing kept here/);
  expect(existsSync(dst)).toBe(false);
  // The guest never stopped being S's: it goes on writing there, then finishes intact on S's image.
  const before = serial.loops('source').length;
  await serial.waitFor(() => serial.loops('source').length >= before + 3, 30_000, 'LOOPs on S after the rollback');
  expect(sq.child.exitCode).toBeNull();
  const fd = openSync(src, 'r+');
  const flag = Buffer.alloc(BLOCK);
  flag.write('STOP');
  writeSync(fd, flag, 0, BLOCK, PARAMS.flag * BLOCK);
  closeSync(fd);
  const done = await serial.waitFor((l) => l.text.startsWith('DONE '), 60_000, 'DONE');
  const m = /^DONE i=\d+ bad=0 shadow=([0-9a-f]{32}) disk=([0-9a-f]{32})$/.exec(done.text);
  expect(m, done.text).not.toBeNull();
  expect(m![2]).toBe(m![1]);
  await withTimeout(sq.exit, 30_000, 'source QEMU poweroff');
  expect(md5(src, PARAMS.base * BLOCK, PARAMS.blocks * BLOCK)).toBe(m![1]);
}

/** Random data up to the flag block (so D's background stream has plenty to move), zeroes after it. */
function makeImage(path: string): void {
  const img = Buffer.alloc(IMAGE_BYTES);
  randomFillSync(img, 0, PARAMS.flag * BLOCK);
  writeFileSync(path, img);
}

function md5(path: string, offset: number, length: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, offset);
    return createHash('md5').update(buf.subarray(0, n)).update(Buffer.alloc(length - n)).digest('hex');
  } finally {
    closeSync(fd);
  }
}

async function setStopFlag(socketPath: string): Promise<void> {
  const c = await NbdClient.connect(`nbd+unix:///disk?socket=${socketPath}`);
  const flag = Buffer.alloc(BLOCK);
  flag.write('STOP');
  await c.write(PARAMS.flag * BLOCK, flag);
  await c.flush();
  await c.close();
}

async function kill(q: RunningQemu): Promise<void> {
  if (q.child.exitCode === null && q.child.signalCode === null) q.child.kill('SIGKILL');
  await q.exit;
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function killAgent(a: Agent): Promise<void> {
  if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
  await a.exit;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
