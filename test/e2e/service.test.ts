// Two host services on loopback, two roots standing for two hosts, driven only through their control APIs: 6
// migrations submitted at once each way with --max-jobs 2, aborts while queued, before cut-over (rolled back) and
// after it (refused), one job capped live by set-speed, the service on D SIGKILLed mid-way and restarted, every job
// ending as it must and every completed image byte-exact. A real Prometheus scrapes both services meanwhile.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import type { JobStatus } from '../../src/service/job-types.js';
import { startPrometheus } from '../helpers/prometheus.js';
import { pollUntil, waitUntil } from '../helpers/wait.js';
import { ControlClient } from './helpers/control.js';
import { freePort, startAgent, Teardown, workDir, writeRandomImage, type Agent } from './helpers/processes.js';

const MiB = 1024 * 1024;
const teardown = new Teardown();
afterEach(() => teardown.run());


interface Host {
  name: string;
  root: string;
  control: string;
  port: number;
  metricsPort: number;
  args: string[];
  api: ControlClient;
  proc: Agent | null;
}

async function newHost(dir: string, name: string, maxBandwidth: string): Promise<Host> {
  const root = join(dir, name, 'root');
  const control = join(dir, name, 'control.sock');
  const port = await freePort();
  const metricsPort = await freePort();
  const args = ['serve', '--root', root, '--listen', `127.0.0.1:${port}`, '--control', control, '--metrics-listen', `127.0.0.1:${metricsPort}`, '--max-jobs', '2', '--max-bandwidth', maxBandwidth];
  return { name, root, control, port, metricsPort, args, api: new ControlClient(control), proc: null };
}

async function startService(h: Host): Promise<void> {
  h.proc = teardown.agent(startAgent(h.args));
  await waitUntil(() => h.proc!.stderr().includes('service ready') || h.proc!.child.exitCode !== null, `${h.name} ready`, 30_000);
  if (h.proc.child.exitCode !== null) throw new Error(`${h.name} exited: ${h.proc.stderr()}`);
}

const finished = (j: JobStatus) => j.state === 'completed' || j.state === 'failed' || j.state === 'aborted';

describe('host service', () => {
  it('runs 6 migrations each way between two services: queueing, aborts, a live speed cap, D killed and restarted', async () => {
    const w = workDir('service');
    teardown.later(w.cleanup);
    const a = await newHost(w.dir, 'a', '48M');
    const b = await newHost(w.dir, 'b', '48M');
    for (const h of [a, b]) mkdirSync(join(w.dir, h.name, 'images'), { recursive: true, mode: 0o700 });

    // The migrations: from A to B (dest jobs on B, source jobs on A) and back. Sizes and options give each its part.
    type Plan = { id: string; from: Host; to: Host; size: number; random?: boolean; source?: Record<string, string | boolean>; dest?: Record<string, string | boolean> };
    const plans: Plan[] = [
      // Rolled back during the RAM pre-copy: a large, busy guest that takes long to converge.
      { id: 'ab-1', from: a, to: b, size: 24 * MiB, source: { guest: 'sim', ram: '128M', 'dirty-rate': '200000', 'max-downtime': '1' } },
      // Aborted past cut-over: refused, and it completes.
      { id: 'ab-2', from: a, to: b, size: 64 * MiB },
      // Capped by set-speed while it runs.
      { id: 'ab-3', from: a, to: b, size: 40 * MiB, random: true },
      { id: 'ab-4', from: a, to: b, size: 24 * MiB },
      // Its own cap keeps it streaming when D is killed.
      { id: 'ab-5', from: a, to: b, size: 160 * MiB, source: { 'max-bandwidth': '16M' } },
      // Aborted while queued, on both hosts.
      { id: 'ab-6', from: a, to: b, size: 24 * MiB },
      ...[1, 2, 3, 4, 5, 6].map((n) => ({ id: `ba-${n}`, from: b, to: a, size: 24 * MiB })),
    ];
    const paths = new Map<string, { src: string; dst: string }>();
    for (const [i, p] of plans.entries()) {
      const src = join(w.dir, p.from.name, 'images', `${p.id}.src.img`);
      const dst = join(w.dir, p.to.name, 'images', `${p.id}.dst.img`);
      if (p.random) writeRandomImage(src, p.size);
      else generateDemoImage(src, p.size, 100 + i);
      paths.set(p.id, { src, dst });
    }
    const tickets = new Map(plans.map((p) => [p.id, join(w.dir, `${p.id}.ticket`)]));
    for (const t of tickets.values()) writeFileSync(t, randomBytes(24).toString('hex') + '\n', { mode: 0o600 });

    await startService(a);
    await startService(b);
    // A real Prometheus scrapes A (S of the A-to-B jobs, D of the others) every second.
    const prometheus = await startPrometheus({ host: '127.0.0.1', port: a.metricsPort });
    teardown.later(() => prometheus.close());

    // All at once: each dest job first (its source finds it queued or waiting, never unknown), then its source.
    for (const p of plans) await p.to.api.submit('dest', p.id, { image: paths.get(p.id)!.dst, 'ticket-file': tickets.get(p.id)!, ...p.dest });
    for (const p of plans) {
      const options = { connect: `127.0.0.1:${p.to.port}`, image: paths.get(p.id)!.src, 'ticket-file': tickets.get(p.id)!, 'connect-timeout': '600', ...p.source };
      if (p.from === a) {
        await p.from.api.submit('source', p.id, options);
        continue;
      }
      // B's source jobs through the CLI client, as an operator would submit them.
      const flags = Object.entries(options).flatMap(([k, v]) => (v === true ? [`--${k}`] : [`--${k}`, String(v)]));
      const submit = startAgent(['submit', 'source', '--control', b.control, '--id', p.id, '--json', ...flags]);
      expect((await submit.exit).code, submit.stderr()).toBe(0);
    }
    for (const h of [a, b]) {
      const jobs = await h.api.jobs();
      for (const role of ['source', 'dest'] as const) {
        expect(jobs.filter((j) => j.role === role && j.state === 'running').length).toBeLessThanOrEqual(2);
        expect(jobs.filter((j) => j.role === role && j.state === 'queued').length).toBeGreaterThanOrEqual(4);
      }
    }

    // ab-6 while queued, on both sides: nothing of it ever starts.
    for (const h of [a, b]) {
      const r = await h.api.abort('ab-6');
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ state: 'aborted', startedAt: null, error: { code: 'ABORTED' } });
    }

    // ab-1 during its RAM pre-copy: rolled back, on both sides.
    await pollUntil(async () => (await b.api.job('ab-1')).phase === 'receiving-ram', 'ab-1 in its RAM pre-copy', 60_000);
    const rolledBack = await a.api.abort('ab-1');
    expect(rolledBack.status).toBe(200);
    expect(rolledBack.body).toMatchObject({ state: 'aborted', pastCutover: false });
    await pollUntil(async () => (await b.api.job('ab-1')).state === 'aborted', 'ab-1 rolled back on D');

    // ab-2 past cut-over: refused, with the reason.
    await pollUntil(async () => (await a.api.job('ab-2')).pastCutover, 'ab-2 past cut-over', 60_000);
    const refused = await a.api.abort('ab-2');
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('PAST_CUTOVER');
    expect(refused.body.error.message).toMatch(/guest runs on the destination.*exist only on this source/);

    // ab-3 capped live once it runs; its rate is sampled from the API (S's figure: what left S).
    await pollUntil(async () => (await a.api.job('ab-3')).state === 'running', 'ab-3 admitted', 60_000);
    const cap = 8 * MiB;
    expect((await a.api.setSpeed('ab-3', cap)).speedLimitBytesPerSecond).toBe(cap);
    // Meanwhile, twice: the API's figure, then a whole scrape, Prometheus's figure, and the API's again; the scrape
    // saw a figure the API showed between the two readings (the job moves 8 MiB/s, so they differ).
    const processedOnA = async () => (await a.api.job('ab-3')).dataProcessedBytes;
    const promChecks = (async () => {
      const checks: Array<{ before: number; seen: number | null; after: number }> = [];
      for (let i = 0; i < 2; i++) {
        const before = await processedOnA();
        await prometheus.waitForScrape();
        const seen = await prometheus.value('postcopy_job_data_processed_bytes{job_id="ab-3",role="source"}');
        checks.push({ before, seen, after: await processedOnA() });
      }
      return checks;
    })();
    const samples: Array<{ at: number; bytes: number }> = [];
    for (;;) {
      const j = await a.api.job('ab-3');
      samples.push({ at: performance.now(), bytes: j.dataProcessedBytes });
      if (finished(j)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await a.api.job('ab-3')).state).toBe('completed');
    const rate = measuredRate(samples, 40 * MiB);
    console.log(`service e2e: ab-3 capped at ${cap / MiB} MiB/s moved at ${(rate / MiB).toFixed(2)} MiB/s over ${samples.length} API samples`);
    expect(rate / cap, `ab-3 moved at ${(rate / MiB).toFixed(2)} MiB/s under a cap of ${cap / MiB} MiB/s`).toBeGreaterThan(0.9);
    expect(rate / cap).toBeLessThan(1.1);
    for (const c of await promChecks) {
      expect(c.seen, `Prometheus saw ${c.seen} between API readings ${c.before} and ${c.after}`).not.toBeNull();
      expect(c.before < c.after, 'the job moved during the check').toBe(true);
      expect(c.seen!).toBeGreaterThanOrEqual(c.before);
      expect(c.seen!).toBeLessThanOrEqual(c.after);
    }

    // The service on D (B) killed while ab-5 streams into it, then restarted with the same root: it resumes.
    const ab5 = await b.api.job('ab-5');
    expect(ab5.phase).toBe('postcopy');
    expect(ab5.dataProcessedBytes).toBeLessThan(ab5.dataTotalBytes * 0.9);
    console.log(`service e2e: SIGKILL of B with ab-5 at ${((100 * ab5.dataProcessedBytes) / ab5.dataTotalBytes).toFixed(0)} % (${ab5.phase})`);
    b.proc!.child.kill('SIGKILL');
    await b.proc!.exit;
    await startService(b);

    // Then the service on S (A) stopped by SIGTERM, as a unit restart does, while ab-5 still streams: it exits 0,
    // keeps the job running in its record, and resumes it when started again.
    await pollUntil(async () => (await a.api.job('ab-5')).reconnects > 0 || (await b.api.job('ab-5')).reconnects > 0, 'ab-5 resumed after the kill', 60_000);
    const ab5s = await a.api.job('ab-5');
    expect(ab5s).toMatchObject({ state: 'running', pastCutover: true });
    expect(ab5s.dataProcessedBytes).toBeLessThan(ab5s.dataTotalBytes * 0.9);
    console.log(`service e2e: SIGTERM of A with ab-5 at ${((100 * ab5s.dataProcessedBytes) / ab5s.dataTotalBytes).toFixed(0)} %`);
    a.proc!.child.kill('SIGTERM');
    expect((await a.proc!.exit).code, a.proc!.stderr()).toBe(0);
    await startService(a);
    expect((await a.api.job('ab-5')).state).toBe('running');

    // Every job ends as planned, on both hosts.
    for (const h of [a, b]) await pollUntil(async () => (await h.api.jobs()).every(finished), `every job on ${h.name} finished`, 180_000);
    const expected: Record<string, JobStatus['state']> = { 'ab-1': 'aborted', 'ab-6': 'aborted' };
    for (const p of plans) {
      const want = expected[p.id] ?? 'completed';
      for (const h of [p.from, p.to]) {
        const j = await h.api.job(p.id);
        // A completed job has no error; one that did not complete says why.
        expect({ id: p.id, host: h.name, state: j.state, hasError: j.error !== null }).toEqual({ id: p.id, host: h.name, state: want, hasError: want !== 'completed' });
      }
      const { src, dst } = paths.get(p.id)!;
      if (want === 'completed') {
        const same = await compareImages(src, dst);
        expect(same.ok, `${p.id}: ${dst} differs from ${src} at ${same.firstDifference}`).toBe(true);
      } else {
        // Rolled back or never started: D kept nothing of it.
        expect(existsSync(dst), `${p.id}: ${dst} left behind`).toBe(false);
      }
    }
    expect((await b.api.job('ab-5')).reconnects).toBeGreaterThan(0);
    // The CLI client lists what the API does.
    const listing = startAgent(['jobs', '--control', a.control, '--json']);
    let listed = '';
    listing.child.stdout!.on('data', (c: Buffer) => (listed += c.toString()));
    expect((await listing.exit).code, listing.stderr()).toBe(0);
    const viaCli = (JSON.parse(listed) as { jobs: JobStatus[] }).jobs.map((j) => [j.id, j.role, j.state]);
    expect(viaCli).toEqual((await a.api.jobs()).map((j) => [j.id, j.role, j.state]));

    // A finished job's figure reads the same through Prometheus and the API.
    const done = await a.api.job('ab-4');
    await prometheus.waitForScrape();
    expect(await prometheus.value('postcopy_job_data_processed_bytes{job_id="ab-4",role="source"}')).toBe(done.dataProcessedBytes);
  }, 300_000);
});

/** Bytes per second between 20 % and 90 % of the image: past the start (before the cap took hold) and the last window. */
function measuredRate(samples: Array<{ at: number; bytes: number }>, total: number): number {
  const first = samples.find((s) => s.bytes >= total * 0.2);
  const last = [...samples].reverse().find((s) => s.bytes <= total * 0.9);
  if (!first || !last || last.at - first.at < 2_000) throw new Error(`too few samples to measure a rate: ${JSON.stringify(samples.slice(0, 5))}…`);
  return ((last.bytes - first.bytes) * 1000) / (last.at - first.at);
}
