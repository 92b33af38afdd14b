// The bulk stream's rate over a time window (the demand reads' window, not the whole migration), from D's
// `progress` events (cumulative bytesFetchedBulk, wall-clock timestamps at 1 ms; written on each tick the stream
// moved, so a stall reads as a gap between samples).
import { assertValidEvent } from './event-schema.js';
import type { BenchEvent } from './proc.js';
import { MS_PER_S, mib } from './units.js';

export interface WindowRate {
  /** Bulk MiB/s between the two progress samples used. */
  miBps: number;
  /** The read window itself, seconds. */
  windowSec: number;
  /** The span the rate is taken over, seconds: samples inside the window when two are, else the two around it. */
  spanSec: number;
  /** 'inside': both samples lie in the window; 'around': the nearest samples outside it (a short window). */
  basis: 'inside' | 'around' | 'none';
}

/** Progress samples (wall ms, cumulative bulk bytes) from D's events. */
export function bulkSamples(events: readonly BenchEvent[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const e of events) {
    if (e.event !== 'progress') continue;
    assertValidEvent(e, 'progress samples');
    const t = Date.parse(e.ts);
    const b = Number(e.bytesFetchedBulk);
    if (Number.isFinite(t) && Number.isFinite(b)) out.push([t, b]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * The rate over [startMs, endMs]. Samples inside the window are preferred (they see only the window); when fewer
 * than two fall inside it, the last sample at or before its start and the first at or after its end.
 */
export function windowRate(samples: ReadonlyArray<[number, number]>, startMs: number, endMs: number): WindowRate {
  const windowSec = (endMs - startMs) / MS_PER_S;
  const inside = samples.filter(([t]) => t >= startMs && t <= endMs);
  let a: [number, number] | undefined;
  let b: [number, number] | undefined;
  let basis: WindowRate['basis'] = 'inside';
  if (inside.length >= 2 && inside[inside.length - 1]![0] > inside[0]![0]) {
    a = inside[0];
    b = inside[inside.length - 1];
  } else {
    basis = 'around';
    a = [...samples].reverse().find(([t]) => t <= startMs) ?? samples[0];
    b = samples.find(([t]) => t >= endMs) ?? samples[samples.length - 1];
  }
  if (!a || !b || b[0] <= a[0]) return { miBps: NaN, windowSec, spanSec: NaN, basis: 'none' };
  const spanSec = (b[0] - a[0]) / MS_PER_S;
  return { miBps: mib(b[1] - a[1]) / spanSec, windowSec, spanSec, basis };
}
