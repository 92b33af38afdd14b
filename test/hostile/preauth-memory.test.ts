// Issue 10 case 6 with real processes: strangers that never authenticate cost D a bounded amount of memory.
// 150 connections each send the header of a 4 MiB BLOCK_DATA and 4 MiB - 1 bytes of it at a real D
// (`node dist/cli/main.js dest`) while a real migration runs through it. D's RSS (/proc/PID/status VmRSS) stays
// under twice its idle RSS, every stranger is cut off, and the migration completes byte-exact.
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { T, buildHeader } from '../helpers/frame-builder.js';
import { Teardown, freePort, readEvents, startAgent, waitForEvent, workDir } from '../e2e/helpers/processes.js';
import { MiB, decodeAll, sleep } from './hostile-harness.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

const STRANGERS = 150;
const DECLARED = 4 * MiB;

/** Resident set of a process in bytes, from /proc/PID/status. */
function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

interface StrangerEnd {
  /** What D sent back (its ERROR frame, if any). */
  received: Buffer;
  closedAt: number;
}

/** One stranger: the header of a 4 MiB BLOCK_DATA, then all of its payload but the last byte. */
function attack(port: number, payload: Buffer): Promise<StrangerEnd> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    const sock: Socket = connect(port, '127.0.0.1');
    sock.on('error', () => {});
    sock.on('data', (c: Buffer) => got.push(c));
    sock.on('close', () => resolve({ received: Buffer.concat(got), closedAt: Date.now() }));
    sock.on('connect', () => {
      sock.write(buildHeader({ type: T.BLOCK_DATA, id: 1, length: DECLARED }));
      sock.write(payload);
    });
    // A stranger D neither cuts off nor reads from would hang here: the test's own deadline catches that.
  });
}

describe('pre-authentication memory (issue 10 case 6)', () => {
  it('150 strangers each sending a 4 MiB BLOCK_DATA: D stays under 2x its idle RSS, refuses them all, and a concurrent migration completes byte-exact', async () => {
    const w = workDir('preauth');
    teardown.later(w.cleanup);
    const src = join(w.dir, 'src.img');
    const dst = join(w.dir, 'dst.img');
    generateDemoImage(src, 128 * MiB, 5);
    const port = await freePort();
    const dEvents = join(w.dir, 'd.jsonl');
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--state-dir', join(w.dir, 'dstate'), '--ticket-file', w.ticket, '--events', dEvents, '--bulk-window', '64K', '--progress-interval', '50']),
    );
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const pid = dest.child.pid!;
    // Idle: the highest of a few samples once D listens.
    let idle = 0;
    for (let i = 0; i < 10; i++) {
      idle = Math.max(idle, rssOf(pid));
      await sleep(20);
    }

    const source = teardown.agent(
      startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--state-dir', join(w.dir, 'sstate'), '--ticket-file', w.ticket, '--events', join(w.dir, 's.jsonl')]),
    );
    await waitForEvent(dEvents, (e) => e.event === 'phase' && e.phase === 'postcopy', 30_000);

    // The strangers, all at once, while the migration streams.
    let peak = rssOf(pid);
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          peak = Math.max(peak, rssOf(pid));
        } catch {
          return; // D exited
        }
        await sleep(10);
      }
    })();
    const payload = Buffer.alloc(DECLARED - 1, 0x5a);
    const ends = await Promise.all(Array.from({ length: STRANGERS }, () => attack(port, payload)));
    const refusedWhileMigrating = readEvents(dEvents).findIndex((e) => e.event === 'refused');
    // Let D settle a moment after the last stranger (what it kept would show now).
    await sleep(300);
    sampling = false;
    await sampler;
    console.log(`D's RSS: idle ${(idle / MiB).toFixed(1)} MiB, peak under attack ${(peak / MiB).toFixed(1)} MiB`);

    expect(peak, `D's RSS: idle ${Math.round(idle / MiB)} MiB, peak ${Math.round(peak / MiB)} MiB`).toBeLessThan(2 * idle);
    // Every stranger was told why (an ERROR frame) and cut off; none was kept.
    for (const end of ends) {
      const msgs = decodeAll(end.received).filter((m) => m.type !== 'PING');
      expect(msgs.map((m) => m.type)).toEqual(['ERROR']);
      const code = (msgs[0] as { code: string }).code;
      expect(['PC_ERR_FRAME_TOO_LARGE', 'PC_ERR_BUSY']).toContain(code);
    }
    const refused = readEvents(dEvents).filter((e) => e.event === 'refused');
    expect(refused.length).toBe(STRANGERS);
    expect(refused.some((e) => e.code === 'PC_ERR_FRAME_TOO_LARGE')).toBe(true);
    expect(refused.every((e) => e.code === 'PC_ERR_FRAME_TOO_LARGE' || e.code === 'PC_ERR_BUSY')).toBe(true);

    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(s.code, source.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    // The strangers came while the migration streamed: D's first refusal is logged before its completion.
    const all = readEvents(dEvents);
    expect(refusedWhileMigrating).toBeGreaterThanOrEqual(0);
    expect(refusedWhileMigrating).toBeLessThan(all.findIndex((e) => e.event === 'complete'));
    expect(readEvents(dEvents).filter((e) => e.event === 'link' && e.state === 'down')).toEqual([]);
    const cmp = await compareImages(src, dst);
    expect(cmp.firstDifference).toBeUndefined();
    expect(cmp.ok).toBe(true);
  }, 120_000);
});
