// Property: under any schedule of socket and backend faults, a whole migration (guest writing on D) ends in
// exactly one of two states, both correct: rolled back before cut-over (guest on S, nothing kept on D), or
// complete with D's image = S at cut-over + the guest's writes. One guest runner throughout; no deadlock
// once the faults stop (later connections are clean). FC_RUNS scales it, FC_SEED replays it.
import { existsSync } from 'node:fs';
import fc from 'fast-check';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { RolledBackError } from '../../src/source/source-agent.js';
import { DestRolledBackError } from '../../src/dest/dest-agent.js';
import { verifyMigration } from '../../src/guest/verify.js';
import { FaultDuplex, type FaultPlan } from '../faults/fault-duplex.js';
import { FaultImage } from '../faults/fault-image.js';
import { startHarness, MiB, type Harness } from '../integration/harness.js';

const FAULTY_CONNECTIONS = 3;
const DEADLOCK_MS = 30_000;

const faultArb = fc.record({
  conn: fc.integer({ min: 0, max: FAULTY_CONNECTIONS - 1 }),
  kind: fc.constantFrom('cutRead', 'cutWrite', 'flip', 'stall', 'delay'),
  at: fc.integer({ min: 1, max: 4_000_000 }),
  delayMs: fc.integer({ min: 1, max: 3 }),
});

const scheduleArb = fc.record({
  faults: fc.array(faultArb, { maxLength: 4 }),
  eioReads: fc.uniqueArray(fc.integer({ min: 0, max: 120 }), { maxLength: 3 }),
  slowReadMs: fc.constantFrom(0, 0, 0, 1),
  seed: fc.integer({ min: 1, max: 1_000_000 }),
});

type Schedule = fc.RecordValue<{ faults: fc.Arbitrary<Array<{ conn: number; kind: string; at: number; delayMs: number }>> }> & {
  eioReads: number[];
  slowReadMs: number;
  seed: number;
};

function planFor(schedule: Schedule, conn: number): FaultPlan {
  const plan: FaultPlan = {};
  for (const f of schedule.faults.filter((x) => x.conn === conn)) {
    if (f.kind === 'cutRead') plan.cutAfterRead = Math.min(plan.cutAfterRead ?? Infinity, f.at);
    else if (f.kind === 'cutWrite') plan.cutAfterWritten = Math.min(plan.cutAfterWritten ?? Infinity, Math.ceil(f.at / 50));
    else if (f.kind === 'flip') plan.flipInboundByte = f.at;
    else if (f.kind === 'stall') plan.stallInboundAfter = f.at;
    else plan.inboundDelayMs = f.delayMs;
  }
  return plan;
}

async function runSchedule(schedule: Schedule): Promise<'complete' | 'rolled-back'> {
  const h: Harness = await startHarness({
    imageBytes: 2 * MiB,
    ramBytes: 1 * MiB,
    seed: schedule.seed,
    dirtyPagesPerSec: 3000,
    diskOpsPerSec: 1500,
    keepaliveTimeoutMs: 300,
    handshakeTimeoutMs: 600,
    abortGraceMs: 300,
    wrapDest: (s: Socket, n: number) => (n < FAULTY_CONNECTIONS ? new FaultDuplex(s, planFor(schedule, n)) : s),
    wrapImage: (img) => new FaultImage(img, { failReads: new Set(schedule.eioReads), readDelayMs: schedule.slowReadMs }),
  });
  try {
    const deadline = new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`no outcome after ${DEADLOCK_MS} ms: deadlock`)), DEADLOCK_MS).unref());
    // D keeps waiting for a source if none ever authenticated: then S's outcome alone decides.
    const destSettled = h.dest.done.then(() => 'x', () => 'x');
    const outcome = await Promise.race([
      h.source.run().then(
        async (v) => [{ status: 'fulfilled', value: v }, await settle(h.dest.done)] as const,
        async (e: unknown) => {
          await Promise.race([destSettled, new Promise((r) => setTimeout(r, 3000))]);
          return [{ status: 'rejected', reason: e }, await settleNow(h.dest.done)] as const;
        },
      ),
      deadline,
    ]);
    const [s, d] = outcome;
    expect(h.overlapSamples()).toBe(0);
    if (s.status === 'fulfilled') {
      expect(d.status).toBe('fulfilled');
      expect(s.value.phase).toBe('confirmed');
      const g = h.destGuest()!;
      expect(h.sourceGuest!.running).toBe(false);
      expect(g.running).toBe(true);
      await g.pause();
      const v = await verifyMigration({ sourceImage: h.src, destImage: h.dst, writeMap: g.writeMapEntries() });
      expect(v.mismatches).toEqual([]);
      expect(g.stats.readMismatches).toBe(0);
      expect(h.sourceGuest!.stats.readMismatches).toBe(0);
      return 'complete';
    }
    // Rolled back: only possible before cut-over, the guest back on S, nothing left on D.
    expect(s.reason).toBeInstanceOf(RolledBackError);
    expect(h.destGuest()).toBeNull();
    expect(h.sourceGuest!.running).toBe(true);
    if (h.source.failedInPhase === 'connecting' && h.dest.phase === 'idle') {
      // Never authenticated: D created nothing and keeps waiting for a source.
      expect(existsSync(h.dst)).toBe(false);
      return 'rolled-back';
    }
    expect(d.status).toBe('rejected');
    if (d.status === 'rejected') expect(d.reason).toBeInstanceOf(DestRolledBackError);
    expect(h.destGuest()).toBeNull();
    expect(h.sourceGuest!.running).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(h.dst)).toBe(false);
    return 'rolled-back';
  } finally {
    await h.cleanup();
  }
}

function settle<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return p.then((value) => ({ status: 'fulfilled', value }) as const, (reason: unknown) => ({ status: 'rejected', reason }) as const);
}

/** The promise's state now (pending counts as not settled: reported as rejected with 'pending'). */
function settleNow<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return Promise.race([settle(p), new Promise<PromiseSettledResult<T>>((r) => setImmediate(() => r({ status: 'rejected', reason: 'pending' })))]);
}

function params(defaultRuns: number): fc.Parameters<unknown> {
  const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : Date.now() ^ (Math.random() * 0x7fffffff);
  const numRuns = process.env.FC_RUNS ? Number(process.env.FC_RUNS) : defaultRuns;
  return { seed, numRuns, endOnFailure: true, verbose: 1 };
}

/** Schedules that once failed (found by the soak), always run first as regressions. */
const REGRESSIONS: Schedule[] = [
  // D reported the rollback before its image was deleted.
  {
    faults: [
      { conn: 0, kind: 'cutRead', at: 2765613, delayMs: 2 },
      { conn: 0, kind: 'flip', at: 606422, delayMs: 3 },
      { conn: 1, kind: 'cutWrite', at: 1482529, delayMs: 2 },
      { conn: 2, kind: 'stall', at: 2782817, delayMs: 2 },
    ],
    eioReads: [],
    slowReadMs: 0,
    seed: 980261,
  },
];

describe('random fault schedules over whole migrations', () => {
  it('always end rolled back before cut-over or complete and correct; one runner; no deadlock', async () => {
    const p = params(12);
    const outcomes = { complete: 0, 'rolled-back': 0 };
    try {
      await fc.assert(
        fc.asyncProperty(scheduleArb, async (schedule) => {
          outcomes[await runSchedule(schedule as Schedule)]++;
        }),
        { ...p, examples: REGRESSIONS.map((r) => [r] as [Schedule]) },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}\nreplay with FC_SEED=${p.seed} FC_RUNS=${p.numRuns}`, { cause: e });
    }
    console.log(`fault schedules: ${p.numRuns} runs (seed ${p.seed}): ${outcomes.complete} complete, ${outcomes['rolled-back']} rolled back`);
  }, 600_000_000);
});
