// The per-stage timings of a demand miss, as the agents report them (COMMON shape, issue 12): D's summary has
// `demandStages`, S's `urgentStages`, each Record<stage, StageStats>. Read defensively (an agent without them
// gives null: the report prints "n/a"), pooled over reps, and laid out as one table for the report.

import type { StageStats } from '../../src/common/stage-histograms.js';
import { DEMAND_STAGES } from '../../src/dest/demand-stages.js';
import { URGENT_STAGES } from '../../src/source/urgent-stages.js';

export type { StageStats };
/** D's stages of a demand fetch, in path order (the agents' own list). */
export const DEST_STAGES = DEMAND_STAGES;
/** S's stages of an urgent request, in path order. */
export const SOURCE_STAGES = URGENT_STAGES;

/** One stage pooled over reps: counts summed, buckets merged, max of maxima; p50/p99 as median (min–max) of the reps' own. */
export interface PooledStage {
  count: number;
  maxMs: number;
  p50Ms: { median: number; min: number; max: number };
  p99Ms: { median: number; min: number; max: number };
  buckets: Array<[number, number]>;
  reps: number;
}

/** Stage name → pooled figures, per agent; a stage absent from every rep is absent here. */
export interface StageTable {
  dest: Record<string, PooledStage>;
  source: Record<string, PooledStage>;
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

function isStageStats(x: unknown): x is StageStats {
  if (typeof x !== 'object' || x === null) return false;
  const s = x as Record<string, unknown>;
  return isNum(s.count) && isNum(s.p50Ms) && isNum(s.p99Ms) && isNum(s.maxMs) && Array.isArray(s.buckets);
}

/** The stages under `key` of an agent's summary, or null when the summary has none (an agent before issue 12). */
export function readStages(summary: Record<string, unknown> | null | undefined, key: 'demandStages' | 'urgentStages'): Record<string, StageStats> | null {
  const raw = summary?.[key];
  if (typeof raw !== 'object' || raw === null) return null;
  const out: Record<string, StageStats> = {};
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) if (isStageStats(v)) out[name] = v;
  return Object.keys(out).length ? out : null;
}

function medianMinMax(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! };
}

/** Pool one agent's stages over reps (reps without stages are skipped; a stage with no samples in a rep is skipped). */
export function poolStages(reps: ReadonlyArray<Record<string, StageStats> | null>): Record<string, PooledStage> {
  const names = new Set<string>();
  for (const r of reps) if (r) for (const n of Object.keys(r)) names.add(n);
  const out: Record<string, PooledStage> = {};
  for (const name of names) {
    const xs = reps.map((r) => r?.[name]).filter((s): s is StageStats => s !== undefined && s.count > 0);
    if (xs.length === 0) continue;
    const buckets = new Map<number, number>();
    for (const s of xs) for (const [ub, c] of s.buckets) buckets.set(ub, (buckets.get(ub) ?? 0) + c);
    out[name] = {
      count: xs.reduce((a, s) => a + s.count, 0),
      maxMs: Math.max(...xs.map((s) => s.maxMs)),
      p50Ms: medianMinMax(xs.map((s) => s.p50Ms)),
      p99Ms: medianMinMax(xs.map((s) => s.p99Ms)),
      buckets: [...buckets.entries()].sort((a, b) => a[0] - b[0]),
      reps: xs.length,
    };
  }
  return out;
}

/** Row order: the known stages in path order, then any the agents added that this bench does not know yet. */
export function stageOrder(known: readonly string[], ...tables: Array<Record<string, unknown> | undefined>): string[] {
  const extra = new Set<string>();
  for (const t of tables) for (const n of Object.keys(t ?? {})) if (!known.includes(n)) extra.add(n);
  return [...known, ...[...extra].sort()];
}
