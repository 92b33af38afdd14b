// A real QEMU guest migrated end to end: the test guest boots on S with its disk on S's image, keeps writing
// and checking its disk while `postcopy source/dest --guest qemu` move it to D with post-copy storage; its
// own checksums, its console on D, D's final image, the source QEMU's exit and S's exit code are verified.
import { createHash, randomFillSync } from 'node:crypto';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, realpathSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TcpProxy } from '../nbd/helpers/tcp-proxy.js';
import { throttledRelay } from '../e2e/helpers/throttled-relay.js';
import { waitUntil } from '../helpers/wait.js';
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
  type SerialLine,
  type TestGuest,
  GUEST_KERNEL_FAULT,
} from './helpers/qemu.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const IMAGE_BYTES = 160 * MiB;
/**
 * The guest rewrites 4 MiB at 120 MiB, far past where D's background stream starts, so its first reads on D
 * are demand fetches; it polls a flag block at 150 MiB. Below 119 MiB it times reads of blocks it never read,
 * stepping down 256 KiB each (away from where D's stream goes on after a miss), 3 per iteration.
 */
const PARAMS: GuestParams = { base: (120 * MiB) / BLOCK, blocks: 1024, flag: (150 * MiB) / BLOCK, iters: 3000, delay: 0.02 };
/** The same guest, also timing its reads (only where the figures are reported: the extra work per loop is not free under TCG). */
const TIMED: GuestParams = { ...PARAMS, fresh: { top: (119 * MiB) / BLOCK, stride: (256 * 1024) / BLOCK, perLoop: 3 } };
/** Loop iterations on D, after the guest's disk moved to D's image, before the host ends the loop. */
const LOOPS_AFTER_PIVOT = 8;
/**
 * From cut-over on, S's bytes to D pass a relay at this rate in the tests that time the guest's reads: D's stream
 * then takes seconds instead of a fraction of one, so the guest reads missing blocks for several iterations (as
 * over a real link).
 */
const THROTTLE_BYTES_PER_SEC = 40 * MiB;

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
  pivotMs: number;
  /** The guest's own timed reads (its READ lines), where its disk was when it made them. */
  guestReads: Record<'onSource' | 'onExport' | 'onImage', ReadFigures> | null;
  /** D's own figure for the same misses. */
  agentDemandMs: { p50: number; p99: number; count: number };
}

interface ReadFigures {
  /** Reads of blocks the guest never read before: on D during post-copy, most are demand fetches. */
  freshMs: { n: number; p50: number; p90: number; max: number };
  /** A read of the block it just wrote, timed the same way: dd's start-up and the guest's own I/O path. */
  writtenMs: { n: number; p50: number };
}

interface MigrateOptions {
  postcopyRam: boolean;
  cutLinkAfterCutover?: boolean;
  /** Cap S→D from cut-over on, and have the guest time its reads. */
  timed?: boolean;
  blockPivotOnce?: boolean;
  lineEnd?: '\n';
}

async function migrateGuest(opts: MigrateOptions): Promise<Outcome> {
  const params = opts.timed ? TIMED : PARAMS;
  const t = workDir('qemu');
  cleanups.push(t.cleanup);
  const src = join(t.dir, 'src.img');
  const dst = join(t.dir, 'dst.img');
  const sEvents = join(t.dir, 's.jsonl');
  const dEvents = join(t.dir, 'd.jsonl');
  makeImage(src);

  // S's guest: boots on its own image and runs its loop before anything else starts.
  const sq = startSourceQemu(guest, params, { image: src, qmp: join(t.dir, 'src.qmp'), serial: join(t.dir, 'src-serial.log') });
  cleanups.push(() => kill(sq));
  const serial = new SerialWatcher(join(t.dir, 'src-serial.log'));
  cleanups.push(() => serial.stop());
  try {
    return await migrateRunningGuest(opts, params, t, serial, sq, { src, dst, sEvents, dEvents });
  } catch (e) {
    throw guestCrashOr(e, serial, dEvents);
  }
}

async function migrateRunningGuest(
  opts: MigrateOptions,
  params: GuestParams,
  t: { dir: string; ticket: string },
  serial: SerialWatcher,
  sq: RunningQemu,
  f: { src: string; dst: string; sEvents: string; dEvents: string },
): Promise<Outcome> {
  const { src, dst, sEvents, dEvents } = f;
  await serial.waitFor((l) => l.text.startsWith('LOOP i=3 '), 60_000, 'LOOP on the source');

  const port = await freePort();
  const nbdSocket = join(t.dir, 'nbd.sock');
  const dest = startAgent([
    'dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket, '--events', dEvents,
    '--nbd-socket', nbdSocket, '--bulk-window', '256K', '--guest', 'qemu', '--qemu-cmd', destTemplate(guest, params, opts.lineEnd),
  ]);
  cleanups.push(() => killAgent(dest));
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const proxy = opts.cutLinkAfterCutover ? await TcpProxy.start({ host: '127.0.0.1', port }) : null;
  if (proxy) cleanups.push(() => proxy.close());
  // Uncapped until cut-over: QEMU's RAM pre-copy runs as in the other tests (a longer one meets the TCG flake more).
  const throttle = opts.timed ? await throttledRelay(port, Infinity) : null;
  if (throttle) cleanups.push(() => throttle.close());

  const started = Date.now();
  const source = startAgent([
    'source', '--connect', `127.0.0.1:${proxy?.port ?? throttle?.port ?? port}`, '--image', src, '--ticket-file', t.ticket, '--events', sEvents,
    '--guest', 'qemu', '--qmp', join(t.dir, 'src.qmp'), ...(opts.postcopyRam ? ['--postcopy-ram'] : []),
  ]);
  cleanups.push(() => killAgent(source));
  const qemuStarted = await waitForEvent(dEvents, (e) => e.event === 'hypervisor' && e.state === 'started', 30_000);
  serial.setDest(String(qemuStarted.serial));
  const qemuPid = Number(qemuStarted.pid);
  cleanups.push(() => killPid(qemuPid));

  await waitForEvent(dEvents, (e) => e.event === 'cutover', 60_000);
  // At once: D's background stream (256K window) still has most of the image to pull.
  proxy?.cutAll();
  throttle?.setRate(THROTTLE_BYTES_PER_SEC);
  // Another process holding the image (a backup tool, a second QEMU): QEMU cannot take it over, the pivot fails.
  const holder = opts.blockPivotOnce ? await holdImage(dst) : null;
  if (holder) cleanups.push(() => holder.release());

  const s = await withTimeout(source.exit, 90_000, 'source agent exit');
  expect(s.code, source.stderr()).toBe(0);
  const wallMs = Date.now() - started;
  expect(readEvents(sEvents).some((e) => e.event === 'complete')).toBe(true);
  // Shutting the source down is quitting its QEMU.
  const sqExit = await withTimeout(sq.exit, 10_000, 'source QEMU exit');
  expect(sqExit.code, sq.stderr()).toBe(0);

  if (holder) {
    // The move failed: D says so, stays up, and the guest goes on running from the export.
    const failed = await waitForEvent(dEvents, (e) => e.event === 'hypervisor' && e.state === 'pivot-failed', 60_000);
    expect(String(failed.error)).toMatch(/lock/);
    await waitUntil(() => /The guest runs on from this export, which stays up/.test(dest.stderr()), "D's line on the failed move", 10_000);
    expect(dest.stderr()).toMatch(/postcopy dest: moving the guest disk to .*dst\.img failed: .*lock.*; \S+ is still on the export\./);
    const failedAt = Date.now();
    await serial.waitFor(() => serial.loops('dest').filter((l) => l.at > failedAt).length >= 4, 60_000, '4 LOOPs on the export after the failed move');
    expect(dest.child.exitCode).toBeNull();
    const disk = qemuDisk(qemuPid, dst, String(qemuStarted.qmp));
    expect(disk.imageOpen).toBe(false);
    // The export's NBD connection, and nothing else (D's QMP connection counts with the listener, see qemuDisk).
    expect(disk.otherSockets, 'the NBD connection').toBe(1);
    // SIGTERMs while the cause stands: each tries again and fails again; none ends D (the guest's disk).
    const failures = () => readEvents(dEvents).filter((e) => e.event === 'hypervisor' && e.state === 'pivot-failed').length;
    for (const n of [2, 3]) {
      dest.child.kill('SIGTERM');
      await waitUntil(() => failures() >= n || dest.child.exitCode !== null, `failed try ${n}`, 30_000);
      expect(dest.child.exitCode, dest.stderr()).toBeNull();
    }
    const retriedAt = Date.now();
    await serial.waitFor(() => serial.loops('dest').some((l) => l.at > retriedAt), 30_000, 'a LOOP on the export after the retries');
    // Cause fixed: the next SIGTERM tries again, and this time the guest moves.
    await holder.release();
    dest.child.kill('SIGTERM');
  }

  // D moves the guest's disk to its image and exits 0; QEMU runs on without it.
  const d = await withTimeout(dest.exit, 60_000, 'dest agent exit').catch((e: Error) => {
    throw new Error(`${e.message}; its events: ${readEvents(dEvents).slice(-4).map((x) => JSON.stringify(x)).join(' ')}; stderr: ${dest.stderr().slice(-1500)}`);
  });
  expect(d.code, dest.stderr()).toBe(0);
  expect(dest.stderr()).toMatch(/postcopy dest: the guest runs on \S*dst\.img now \(moved off the export in \d+ ms\)/);
  const pivoted = readEvents(dEvents).find((e) => e.event === 'hypervisor' && e.state === 'pivoted')!;
  expect(pivoted).toBeDefined();
  const pivotAt = Date.parse(pivoted.ts);
  expect(process.kill(qemuPid, 0)).toBe(true);
  const disk = qemuDisk(qemuPid, dst, String(qemuStarted.qmp));
  expect(disk.imageOpen, 'QEMU has D\'s image open').toBe(true);
  expect(disk.otherSockets, 'QEMU has no socket but its QMP listener (no NBD connection)').toBe(0);

  // The guest goes on writing and checking its disk, now its local image; then the host ends its loop in the image.
  await serial.waitFor(() => serial.loops('dest').filter((l) => l.at > d.at).length >= LOOPS_AFTER_PIVOT, 60_000, `${LOOPS_AFTER_PIVOT} LOOPs after the move`);
  setStopFlag(dst);
  const done = await serial.waitFor((l) => l.text.startsWith('DONE '), 60_000, 'DONE');
  // The guest powers off: QEMU exits by itself, cleanly.
  await waitUntil(() => !alive(qemuPid), 'the destination QEMU to exit after poweroff', 30_000);

  // The guest's own checks: every write read back intact, and older blocks too, on S, on the export and on the image.
  expect(serial.lines.filter((l) => l.text.startsWith('MISMATCH'))).toEqual([]);
  const m = /^DONE i=(\d+) bad=(\d+) shadow=([0-9a-f]{32}) disk=([0-9a-f]{32})$/.exec(done.text);
  expect(m, done.text).not.toBeNull();
  expect(m![2]).toBe('0');
  expect(m![4]).toBe(m![3]);
  // Its output continued on D, iteration after iteration with none lost or repeated.
  const loops = serial.loops().map((l) => Number(/i=(\d+)/.exec(l.text)![1]));
  expect(loops).toEqual(loops.map((_, k) => loops[0]! + k));
  expect(serial.loops('source').length).toBeGreaterThan(0);
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
  const demand = dSummary.demandLatency as { p50Ms: number; p99Ms: number; count: number };
  const outcome: Outcome = {
    guestPauseMs: firstOnD.at - lastOnS.at,
    downtimeMs: Number(sSummary.downtimeMs),
    qemu: hv.qemu,
    relay: hv.relay,
    demandBytes: Number(dSummary.bytesFetchedDemand),
    bulkBytes: Number(dSummary.bytesFetchedBulk),
    wallMs,
    sourceReconnects: Number(sSummary.reconnects),
    pivotMs: Number(pivoted.durationMs),
    guestReads: opts.timed ? guestReadFigures(serial, pivotAt) : null,
    agentDemandMs: { p50: demand.p50Ms, p99: demand.p99Ms, count: demand.count },
  };
  console.log(`qemu migration (postcopy-ram ${opts.postcopyRam}${proxy ? ', link cut' : ''}${throttle ? ', S→D at 40 MiB/s after cut-over, guest timing its reads' : ''}${holder ? ', first move blocked' : ''}): ${JSON.stringify(outcome)}`);
  return outcome;
}

/** The guest's READ lines split by where its disk was: S's image, D's export (post-copy), D's image (after the move). */
function guestReadFigures(serial: SerialWatcher, pivotAt: number): Outcome['guestReads'] {
  const groups = { onSource: [] as SerialLine[], onExport: [] as SerialLine[], onImage: [] as SerialLine[] };
  for (const l of serial.lines) {
    if (!l.text.startsWith('READ ')) continue;
    // The watcher stamps a line when it sees it (20 ms polls): lines within a poll of the move are left out.
    if (l.log === 'source') groups.onSource.push(l);
    else if (l.at < pivotAt - 100) groups.onExport.push(l);
    else if (l.at > pivotAt + 100) groups.onImage.push(l);
  }
  const figures = (lines: SerialLine[]): ReadFigures => {
    // A line the kernel's own console output broke into is left out rather than misread.
    const whole = lines.map((l) => /^READ i=\d+ fresh_us=([\d,]*) written_us=(\d+)$/.exec(l.text)).filter((m) => m !== null);
    const fresh = whole.flatMap((m) => m[1]!.split(',').filter(Boolean).map((us) => Number(us) / 1000));
    const written = whole.map((m) => Number(m[2]) / 1000);
    return {
      freshMs: { n: fresh.length, p50: percentile(fresh, 0.5), p90: percentile(fresh, 0.9), max: Math.max(0, ...fresh) },
      writtenMs: { n: written.length, p50: percentile(written, 0.5) },
    };
  };
  return { onSource: figures(groups.onSource), onExport: figures(groups.onExport), onImage: figures(groups.onImage) };
}

function percentile(xs: number[], q: number): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 100) / 100;
}

/**
 * What QEMU holds, from /proc (what lsof reads): whether the image is open, and how many sockets it has besides its
 * QMP socket. /proc/net/unix names a listener's path on the connections it accepted too, so D's QMP connection is
 * left out with the listener; a client socket (the NBD connection to D's export) carries no path and counts.
 */
function qemuDisk(pid: number, image: string, qmpPath: string): { imageOpen: boolean; otherSockets: number } {
  const fds = readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
  const listeners = new Set(
    readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[7] === qmpPath)
      .map((f) => f[6]),
  );
  const sockets = fds.filter((f) => f.startsWith('socket:[')).map((f) => f.slice(8, -1));
  return { imageOpen: fds.includes(realpathSync(image)), otherSockets: sockets.filter((inode) => !listeners.has(inode)).length };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `qemu-io` with the image open read-write holds QEMU's image locks: a QEMU cannot open it for its guest meanwhile. */
async function holdImage(path: string): Promise<{ release: () => Promise<void> }> {
  const child = spawn('qemu-io', ['-f', 'raw', path], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  // Its prompt comes once the image is open (and locked).
  await waitUntil(() => out.includes('qemu-io>') || child.exitCode !== null, 'qemu-io to open the image', 10_000);
  if (child.exitCode !== null) throw new Error(`qemu-io could not open ${path}: ${out}`);
  return {
    /** Resolves once qemu-io is gone: its locks go with the process, not with the signal. */
    release: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Attempts of a case whose guest kernel faulted; any other failure fails at once. A faulted attempt ends as soon as
 * the console shows it (20–30 s). Even at the rate measured before the RAM-size workaround (1 in 4), all 8 attempts
 * fault about once in 65 000 runs of a case.
 */
const GUEST_CRASH_ATTEMPTS = 8;

class GuestKernelFault extends Error {}

/**
 * A failure whose guest console shows a kernel fault becomes a GuestKernelFault (retried); any failure gets where
 * the guest's loop last was, relative to cut-over, for the next reader of a CI log.
 */
function guestCrashOr(e: unknown, serial: SerialWatcher, dEvents: string): unknown {
  serial.poll();
  const last = serial.loops().at(-1);
  const cutover = readEvents(dEvents).find((x) => x.event === 'cutover');
  const where = last ? `; the guest's last LOOP (${last.text}) was on ${last.log}, ${cutover ? `${last.at - Date.parse(cutover.ts)} ms after cut-over` : 'before any cut-over'}` : '';
  const fault = serial.lines.find((l) => GUEST_KERNEL_FAULT.test(l.text));
  const message = `${(e as Error).message}${where}`;
  return fault ? new GuestKernelFault(`the guest's kernel faulted on ${fault.log} (${fault.text.slice(0, 100)}): ${message}`, { cause: e }) : Object.assign(e as Error, { message });
}

/** One migration case, run again only when the guest's kernel faulted (the TCG flake below). */
async function retryOnGuestFault<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (e) {
      if (!(e instanceof GuestKernelFault) || attempt >= GUEST_CRASH_ATTEMPTS) throw e;
      console.log(`attempt ${attempt} of ${GUEST_CRASH_ATTEMPTS}: ${e.message.slice(0, 300)}; running the case again`);
      for (const c of cleanups.reverse()) await c();
      cleanups = [];
    }
  }
}

// A retry, measured not guessed, and only for that signature: QEMU 7.2 under TCG loses guest RAM writes during live
// migration when RAM is a multiple of 256 KiB (see GUEST_RAM in helpers/qemu.ts: fixed in QEMU 9.0), and the
// destination guest's kernel then faults in its first second on D (an Oops, a GPF, a NULL dereference, a corrupted
// page table, init killed by SIGSEGV). It is QEMU's, not ours: plain QEMU-to-QEMU migrations of this guest over a Unix
// socket, no postcopy involved, faulted in 12 of 48 runs at 256 MiB (2026-12-03, 22:00-22:50 UTC); through postcopy
// 5 to 6 of 23 the same day. The tests now run the guest with 256 MiB + 4 KiB, where the same plain migrations faulted
// in 0 of 24. Should it still happen, a case whose guest faults runs again (up to GUEST_CRASH_ATTEMPTS); any other
// failure fails at once.
describe.skipIf(skipQemu())('a QEMU guest migrated through postcopy', () => {
  beforeAll(() => {
    assertQemu();
    guest = buildTestGuest();
  }, 300_000);

  it('precopy RAM: the guest keeps writing on D, its disk moves to D\'s image, D exits 0 and QEMU runs on; S quits QEMU and exits 0', async () => {
    const o = await retryOnGuestFault(() => migrateGuest({ postcopyRam: false, timed: true }));
    expect(o.qemu.status).toBe('completed');
    expect(o.qemu.postcopyStarted).toBe(false);
    // The guest timed its reads in all three places (the figures are printed above and in the README).
    expect(o.guestReads!.onSource.freshMs.n).toBeGreaterThan(0);
    expect(o.guestReads!.onExport.freshMs.n).toBeGreaterThan(0);
    expect(o.guestReads!.onImage.freshMs.n).toBeGreaterThan(0);
    expect(o.agentDemandMs.count).toBeGreaterThan(0);
  }, 600_000);

  it("QEMU's postcopy-ram: same checks, RAM sent after the switch (template lines without backslashes)", async () => {
    const o = await retryOnGuestFault(() => migrateGuest({ postcopyRam: true, lineEnd: '\n' }));
    expect(o.qemu.postcopyStarted).toBe(true);
    expect(Number(o.qemu.postcopyBytes)).toBeGreaterThan(0);
  }, 600_000);

  it('the destination QEMU dies before Finish: S rolls back and its guest runs on; D kept nothing', async () => {
    await rollbackWhenDestQemuDies();
  }, 600_000);

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
    const o = await retryOnGuestFault(() => migrateGuest({ postcopyRam: false, cutLinkAfterCutover: true }));
    expect(o.sourceReconnects).toBeGreaterThanOrEqual(1);
  }, 600_000);

  it('the move to the image fails (another process holds it): the guest runs on from the export, D serves on; the next SIGTERM moves it', async () => {
    await retryOnGuestFault(() => migrateGuest({ postcopyRam: false, timed: true, blockPivotOnce: true }));
  }, 600_000);
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
  // QEMU's log and the guest's console are kept, renamed aside, and D's line names them.
  const kept = /the destination QEMU's logs are kept: (\S+), (\S+)$/m.exec(dest.stderr());
  expect(kept, dest.stderr()).not.toBeNull();
  expect(kept![1]).toMatch(/qemu-dest\.rolled-back-\d{8}T\d{6}Z\.log$/);
  expect(kept![2]).toMatch(/qemu-serial\.rolled-back-\d{8}T\d{6}Z\.log$/);
  expect(existsSync(kept![1]!)).toBe(true);
  // The console log holds what the destination guest printed (a kernel that loaded its RAM prints nothing new before it runs: it may be empty).
  expect(existsSync(kept![2]!)).toBe(true);
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

/** The guest's disk is D's image now: the flag goes straight into it (QEMU reads through the page cache). */
function setStopFlag(image: string): void {
  const fd = openSync(image, 'r+');
  try {
    const flag = Buffer.alloc(BLOCK);
    flag.write('STOP');
    writeSync(fd, flag, 0, BLOCK, PARAMS.flag * BLOCK);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
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
