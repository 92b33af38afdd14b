// The host service's job bookkeeping with its agents replaced by controllable fakes: admission per role, the queue's
// order, aborts before and after cut-over, the records on disk and what a restart makes of them.
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import type { BulkRateLimit } from '../../src/common/token-bucket.js';
import type { DestListener, ListenerFactory } from '../../src/link/listener.js';
import type { PoolShare } from '../../src/service/bandwidth-pool.js';
import type { JobCheck, JobContext, JobLauncher, JobOutcome, JobProgress, RunningJob } from '../../src/service/job-launcher.js';
import { ApiError, type JobOptions, type JobRole } from '../../src/service/job-types.js';
import { HostService } from '../../src/service/service.js';
import { fcParams } from '../helpers/fc.js';
import { waitUntil } from '../helpers/wait.js';

const unlimited: BulkRateLimit = { bytesPerSecond: null, take() {}, onChange: () => () => {} };

/** An agent the test finishes by hand; `cutover` decides whether an abort is still accepted. */
class FakeJob implements RunningJob {
  readonly id: string;
  readonly role: JobRole;
  cutover = false;
  closed = false;
  maxDowntime: number | null = null;
  #resolve!: (o: JobOutcome) => void;
  readonly done = new Promise<JobOutcome>((r) => (this.#resolve = r));
  constructor(id: string, role: JobRole) {
    this.id = id;
    this.role = role;
  }
  finish(outcome: JobOutcome = { state: 'completed', error: null }): void {
    this.#resolve(outcome);
  }
  progress(): JobProgress {
    return { phase: this.cutover ? 'postcopy' : 'precopy', sessionId: 's-' + this.id, dataTotalBytes: 100, dataProcessedBytes: 40, bytesOnlyOnSource: 60, downtimeMs: null, demandLatency: { count: 0, p50Ms: null, p99Ms: null }, reconnects: 0, bytesByClass: { urgent: 0, bulk: 40 }, maxDowntimeMs: this.maxDowntime, pastCutover: this.cutover };
  }
  abort() {
    if (this.cutover) return { accepted: false as const, pastCutover: true, reason: 'the guest runs on the destination' };
    queueMicrotask(() => this.finish({ state: 'aborted', error: { code: 'PC_ERR_ROLLBACK', message: 'aborted' } }));
    return { accepted: true as const };
  }
  setMaxDowntime(ms: number): boolean {
    if (this.cutover) return false;
    this.maxDowntime = ms;
    return true;
  }
  /** As the real agents: a source's close rolls back before cut-over and fails (state kept) after; a dest's settles nothing. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.role === 'source') this.finish(this.cutover ? { state: 'failed', error: { code: 'PC_ERR_LINK_CLOSED', message: 'closed' } } : { state: 'aborted', error: { code: 'PC_ERR_ROLLBACK', message: 'stopped' } });
  }
}

class FakeLauncher implements JobLauncher {
  readonly started: FakeJob[] = [];
  async check(role: JobRole, options: JobOptions): Promise<JobCheck> {
    if (options.bad) throw new UsageError('PC_ERR_USAGE', '--bad is not an option');
    return { ticketId: role === 'dest' ? String(options.ticket ?? options.image) : null, image: String(options.image), bulkBytesPerSecond: null };
  }
  async start(role: JobRole, _options: JobOptions, ctx: JobContext): Promise<RunningJob> {
    const job = new FakeJob(ctx.id, role);
    this.started.push(job);
    return job;
  }
  running(id: string): FakeJob {
    const all = this.started.filter((j) => j.id === id);
    return all[all.length - 1]!;
  }
}

class FakePort {
  readonly held = new Map<string, number>();
  listenerFor(ticketId: string): ListenerFactory {
    return (): DestListener => ({
      listen: async () => {
        this.held.set(ticketId, (this.held.get(ticketId) ?? 0) + 1);
        return { host: '127.0.0.1', port: 1 };
      },
      close: () => void this.held.set(ticketId, (this.held.get(ticketId) ?? 1) - 1),
    });
  }
}

class FakePool {
  readonly caps = new Map<PoolShare, number | null>();
  join(ownCap: number | null): PoolShare {
    const caps = this.caps;
    const share: PoolShare = {
      limit: unlimited,
      get ownCap() {
        return caps.get(share) ?? null;
      },
      get effective() {
        return caps.get(share) ?? null;
      },
      setOwnCap: (bps) => void caps.set(share, bps),
      leave: () => void caps.delete(share),
    };
    caps.set(share, ownCap);
    return share;
  }
}

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

function newRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'pc-service-'));
  roots.push(root);
  return join(root, 'svc');
}

async function newService(root: string, maxJobs = 2) {
  const launcher = new FakeLauncher();
  const port = new FakePort();
  const pool = new FakePool();
  const service = new HostService({ root, maxJobs, pool: pool as never, launcher, port, log: silentLogger(), observer: { demandFetch() {} } });
  await service.start();
  return { service, launcher, port, pool };
}

describe('host service jobs', () => {
  it('runs at most --max-jobs per role and starts the queued ones in the order they came', async () => {
    const { service, launcher } = await newService(newRoot());
    for (let i = 1; i <= 4; i++) await service.submit({ role: 'source', id: `s${i}`, options: { image: `/img${i}` } });
    await service.submit({ role: 'dest', id: 'd1', options: { image: '/dimg' } });
    await waitUntil(() => launcher.started.length === 3, 'three agents started');
    expect(service.list().map((j) => [j.id, j.state])).toEqual([['s1', 'running'], ['s2', 'running'], ['s3', 'queued'], ['s4', 'queued'], ['d1', 'running']]);
    launcher.running('s2').finish();
    await waitUntil(() => service.get('s3').state === 'running', 's3 admitted');
    expect(service.get('s4').state).toBe('queued');
    expect(service.get('s2').state).toBe('completed');
    expect(service.get('s2').dataProcessedBytes).toBe(40); // a finished job keeps its last figures
  });

  it('aborts a queued job without starting it, a running one by rolling back, and refuses one past cut-over with the reason', async () => {
    const { service, launcher } = await newService(newRoot(), 1);
    await service.submit({ role: 'source', id: 'a', options: { image: '/a' } });
    await service.submit({ role: 'source', id: 'b', options: { image: '/b' } });
    await service.submit({ role: 'source', id: 'c', options: { image: '/c' } });
    expect((await service.abort('b')).state).toBe('aborted');
    await waitUntil(() => launcher.started.length === 1, 'a started');
    launcher.running('a').cutover = true;
    const refused = await service.abort('a').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 409, code: 'PAST_CUTOVER', message: 'the guest runs on the destination' });
    launcher.running('a').finish();
    await waitUntil(() => service.get('c').state === 'running', 'c admitted (b was skipped)');
    expect(launcher.started.map((j) => j.id)).toEqual(['a', 'c']);
    expect((await service.abort('c')).state).toBe('aborted');
    await expect(service.abort('c')).rejects.toMatchObject({ status: 409, code: 'FINISHED' });
  });

  it('refuses bad ids, bad options, a taken id, and a second job on the same image or ticket', async () => {
    const { service } = await newService(newRoot());
    await expect(service.submit({ role: 'source', id: 'Bad_Id', options: { image: '/x' } })).rejects.toMatchObject({ status: 400, code: 'BAD_ID' });
    await expect(service.submit({ role: 'source', options: { image: '/x', bad: true } })).rejects.toMatchObject({ status: 400, code: 'PC_ERR_USAGE' });
    await service.submit({ role: 'dest', id: 'd1', options: { image: '/x', ticket: 't1' } });
    await expect(service.submit({ role: 'dest', id: 'd1', options: { image: '/y' } })).rejects.toMatchObject({ status: 409, code: 'ID_TAKEN' });
    await expect(service.submit({ role: 'dest', options: { image: '/x', ticket: 't2' } })).rejects.toMatchObject({ status: 409, code: 'IMAGE_BUSY' });
    await expect(service.submit({ role: 'dest', options: { image: '/z', ticket: 't1' } })).rejects.toMatchObject({ status: 409, code: 'TICKET_BUSY' });
    expect(() => service.get('nope')).toThrow(expect.objectContaining({ status: 404 }));
  });

  it('holds a queued dest job\'s ticket on the port until it runs, then hands it to the agent', async () => {
    const { service, launcher, port } = await newService(newRoot(), 1);
    await service.submit({ role: 'dest', id: 'd1', options: { image: '/1', ticket: 't1' } });
    await service.submit({ role: 'dest', id: 'd2', options: { image: '/2', ticket: 't2' } });
    expect(port.held.get('t2')).toBe(1); // queued: its source hears "busy" and retries
    expect(port.held.get('t1') ?? 0).toBe(0); // running: the (fake) agent registers it itself
    launcher.running('d1').finish();
    await waitUntil(() => service.get('d2').state === 'running', 'd2 admitted');
    expect(port.held.get('t2')).toBe(0);
  });

  it('keeps set-speed and max-downtime in the record; max-downtime is refused on D and past cut-over', async () => {
    const root = newRoot();
    const { service, launcher, pool } = await newService(root);
    await service.submit({ role: 'source', id: 's', options: { image: '/s' } });
    await service.submit({ role: 'dest', id: 'd', options: { image: '/d' } });
    await waitUntil(() => launcher.started.length === 2, 'both started');
    expect(service.setSpeed('s', 1_000_000).speedLimitBytesPerSecond).toBe(1_000_000);
    expect([...pool.caps.values()]).toContain(1_000_000);
    expect((await service.setMaxDowntime('s', 300)).maxDowntimeMs).toBe(300);
    await expect(service.setMaxDowntime('d', 300)).rejects.toMatchObject({ status: 409, code: 'NOT_SOURCE' });
    launcher.running('s').cutover = true;
    await expect(service.setMaxDowntime('s', 10)).rejects.toMatchObject({ status: 409, code: 'PAST_CUTOVER' });
    // Stopped past cut-over: the source's record stays running, and the next start runs it again.
    await service.close();
    const again = await newService(root);
    expect(again.service.get('s')).toMatchObject({ state: 'running', speedLimitBytesPerSecond: 1_000_000 });
    expect([...again.pool.caps.values()]).toContain(1_000_000);
  });

  it('refuses a root another live process holds, and takes over one whose service is gone', async () => {
    const root = newRoot();
    const first = await newService(root);
    await first.service.close();
    expect(existsSync(join(root, 'service.lock'))).toBe(false);
    // Held by a live process (our parent stands in for another service): refused before a record is read.
    writeFileSync(join(root, 'service.lock'), `${process.ppid}\n`, { mode: 0o600 });
    await expect(newService(root)).rejects.toThrow(/in use by another postcopy serve/);
    // Left by a process that is gone (a SIGKILL): replaced.
    writeFileSync(join(root, 'service.lock'), '2147483646\n', { mode: 0o600 });
    const second = await newService(root);
    await second.service.close();
  });

  it('removes only a finished job, with its directory', async () => {
    const root = newRoot();
    const { service, launcher } = await newService(root);
    await service.submit({ role: 'source', id: 's', options: { image: '/s' } });
    await waitUntil(() => launcher.started.length === 1, 'started');
    await expect(service.remove('s')).rejects.toMatchObject({ status: 409, code: 'NOT_FINISHED' });
    launcher.running('s').finish();
    await waitUntil(() => service.get('s').state === 'completed', 'completed');
    expect(statSync(join(root, 'jobs', 's')).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'jobs', 's', 'job.json')).mode & 0o777).toBe(0o600);
    await service.remove('s');
    expect(existsSync(join(root, 'jobs', 's'))).toBe(false);
    expect(() => service.get('s')).toThrow(expect.objectContaining({ status: 404 }));
  });

  // Any run of submits, ends, aborts and service restarts: never more than max-jobs running per role, queued jobs
  // start in submission order, a restart starts again exactly the jobs that were running and keeps every state.
  it('keeps admission, order and every job\'s state across any sequence of events and restarts', async () => {
    type Op = { kind: 'submit'; role: JobRole } | { kind: 'end'; pick: number; ok: boolean } | { kind: 'abort'; pick: number } | { kind: 'restart' };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('submit' as const), role: fc.constantFrom<JobRole>('source', 'dest') }),
      fc.record({ kind: fc.constant('end' as const), pick: fc.nat(), ok: fc.boolean() }),
      fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }),
      fc.constant({ kind: 'restart' as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.array(op, { maxLength: 25 }), async (maxJobs, ops) => {
        const root = newRoot();
        let h = await newService(root, maxJobs);
        const submitted: Array<{ id: string; role: JobRole }> = [];
        const startOrder: Record<JobRole, string[]> = { source: [], dest: [] };
        const recordStarts = () => {
          for (const j of h.launcher.started) {
            const role = submitted.find((s) => s.id === j.id)!.role;
            if (!startOrder[role].includes(j.id)) startOrder[role].push(j.id);
          }
        };
        for (const o of ops) {
          if (o.kind === 'submit') {
            const id = `j${submitted.length + 1}`;
            submitted.push({ id, role: o.role });
            await h.service.submit({ role: o.role, id, options: { image: `/${id}` } });
          } else if (o.kind === 'restart') {
            const before = new Map(h.service.list().map((j) => [j.id, j.state]));
            await h.service.close();
            h = await newService(root, maxJobs);
            const relaunched = h.launcher.started.map((j) => j.id);
            for (const [id, state] of before) {
              const after = h.service.get(id).state;
              const role = submitted.find((s) => s.id === id)!.role;
              // A job running before runs again, except a source before cut-over, which the stop rolled back (as
              // SIGTERM does to a standalone source); a queued one may be admitted in a slot that freed up.
              if (state === 'running' && role === 'source') expect(after).toBe('aborted');
              else if (state === 'running') expect(relaunched).toContain(id);
              else if (state !== 'queued') expect(after).toBe(state);
            }
          } else {
            const live = h.service.list().filter((j) => j.state === 'running' || j.state === 'queued');
            if (live.length === 0) continue;
            const target = live[o.pick % live.length]!;
            if (o.kind === 'abort') await h.service.abort(target.id);
            else if (target.state === 'running') h.launcher.running(target.id)?.finish(o.ok ? { state: 'completed', error: null } : { state: 'failed', error: { code: 'X', message: 'x' } });
            await waitUntil(() => !h.service.list().some((j) => j.state === 'running' && !h.launcher.started.some((s) => s.id === j.id)), 'admitted jobs started', 5_000, 1);
          }
          recordStarts();
          for (const role of ['source', 'dest'] as const) {
            const jobs = h.service.list().filter((j) => j.role === role);
            expect(jobs.filter((j) => j.state === 'running').length).toBeLessThanOrEqual(maxJobs);
            // Nothing queued while a slot is free.
            if (jobs.some((j) => j.state === 'queued')) expect(jobs.filter((j) => j.state === 'running').length).toBe(maxJobs);
            // Started in the order submitted.
            const order = submitted.filter((s) => s.role === role).map((s) => s.id);
            expect(startOrder[role]).toEqual(order.filter((id) => startOrder[role].includes(id)));
          }
        }
        await h.service.close();
      }),
      fcParams(40),
    );
  });
});
