// What the progress views say, as pure functions of the agents' progress samples: the status text of each side (a
// bar on a terminal, plain lines elsewhere), rates over a short window, the ETA, and when a plain line is due.
import { RAM_PAGE_SIZE } from '../protocol/constants.js';
import { PROGRESS_BAR_WIDTH, PROGRESS_QUIET_LINE_MS } from './constants.js';
import { formatBytes } from './sizes.js';

/** D's `progress()` (the fields the view reads). */
export interface DestSample {
  phase: string;
  link: string;
  blocksPresent: number;
  blocksTotal: number;
  bytesFetchedDemand: number;
  bytesFetchedBulk: number;
  bytesOnlyOnSource: number;
  /** D's model of the path to S (PathReport), while the link is up. */
  path?: { bottleneckBytesPerSec: number | null; minRttMs: number | null };
}

/** S's `progress()`: what it served, and what D may still lack (an upper bound; 0 once D said COMPLETE). */
export interface SourceSample {
  phase: string;
  link: string;
  bytesTotal: number;
  bytesOnlyOnSource: number;
  bytesServedDemand: number;
  bytesServedBulk: number;
}

/** The last pre-copy round, from a `ram-round` event (either side sees them). */
export interface RamRound {
  round: number;
  /** Pages still dirty after the round. */
  dirtyRemaining: number;
  /** S only: bytes of page data the round sent, and the downtime it expects if it cut over now. */
  bytes?: number;
  expectedDowntimeMs?: number;
}

/** How a migration ended, for the final line. */
export type Outcome = 'complete' | 'failed' | 'stopped';

/**
 * Seconds until the bytes only on S are here: at the bottleneck's rate once D has measured it (the stream is paced
 * to it, and a rate averaged over the last interval says little on a long link), else at the rate just seen.
 */
export function etaSeconds(s: Pick<DestSample, 'bytesOnlyOnSource' | 'path'>, recentRate: number): number | null {
  if (s.bytesOnlyOnSource <= 0) return 0;
  const bottleneck = s.path?.bottleneckBytesPerSec ?? null;
  if (bottleneck !== null && bottleneck > 0) return s.bytesOnlyOnSource / bottleneck + (s.path?.minRttMs ?? 0) / 1000;
  return recentRate > 0 ? s.bytesOnlyOnSource / recentRate : null;
}

/** Bytes (or bytes per second) for a person: anything not a finite, non-negative number reads as 0. */
export function humanBytes(n: number): string {
  return formatBytes(Number.isFinite(n) && n > 0 ? n : 0);
}

/** 42s, 3m05s, 1h02m; '--' when unknown. */
export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Milliseconds to a sensible precision: whole above 10, one decimal below. */
function formatMs(ms: number): string {
  return ms >= 10 ? String(Math.round(ms)) : ms.toFixed(1);
}

/** Done over total in [0, 1]; 0 when the total is not known yet. */
export function fraction(done: number, total: number): number {
  if (!(total > 0) || !Number.isFinite(done)) return 0;
  return Math.min(1, Math.max(0, done / total));
}

/** Percent with one decimal, rounded down: 100.0 % only when all is done. */
export function formatPercent(frac: number): string {
  return `${(Math.floor(frac * 1000) / 10).toFixed(1)}%`;
}

function barGraphic(frac: number): string {
  const filled = Math.floor(frac * PROGRESS_BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'.'.repeat(PROGRESS_BAR_WIDTH - filled)}]`;
}

/** One status: how far (when a fraction is known), the phase, details, the link; one line. */
export interface Status {
  /** Fraction done, or null while there is nothing to measure yet (before cut-over). */
  frac: number | null;
  phase: string;
  details: string[];
  /** The link's state; none on a final line. */
  link?: string;
  /** The pre-copy round shown, if any (a plain line per round). */
  ramRound?: number;
}

/** The status as one line: with the bar graphic on a terminal, without it in plain lines. */
export function statusText(s: Status, graphic: boolean): string {
  const head = s.frac === null ? [s.phase] : graphic ? [barGraphic(s.frac), formatPercent(s.frac), s.phase] : [formatPercent(s.frac), s.phase];
  return [head.join(' '), ...s.details, ...(s.link !== undefined ? [`link ${s.link}`] : [])].join(' | ');
}

/** Rates of both kinds of traffic, from one side's counters. */
export interface Rates {
  demand: number;
  bulk: number;
}

/** The same view of either side: what is measured differs, the shape of the line does not. */
interface SideFigures {
  phase: string;
  link: string;
  /** Fraction done, or null before cut-over (RAM rounds then). */
  frac: number | null;
  /** What moved so far, by kind, and the words for it. */
  moved: { demand: number; bulk: number; verb: string };
  /** What is still to come and its words (D: only on S; S: D lacks up to). */
  toCome: string;
  eta: number | null;
}

function sideStatus(f: SideFigures, rates: Rates, ram: RamRound | null, outcome?: Outcome): Status {
  if (outcome !== undefined) {
    const total = `${f.moved.verb} ${humanBytes(f.moved.demand + f.moved.bulk)} (demand ${humanBytes(f.moved.demand)}, bulk ${humanBytes(f.moved.bulk)})`;
    const word = outcome === 'complete' ? f.phase : `${outcome === 'failed' ? 'FAILED' : 'STOPPED'} (${f.phase})`;
    return { frac: f.frac, phase: word, details: [total, ...(outcome !== 'complete' && f.frac !== null ? [f.toCome] : [])] };
  }
  if (f.frac === null) {
    const details = ram ? [`RAM round ${ram.round}${ram.bytes !== undefined ? `, ${humanBytes(ram.bytes)} sent` : ''}, ${humanBytes(ram.dirtyRemaining * RAM_PAGE_SIZE)} dirty`] : [];
    if (ram?.expectedDowntimeMs !== undefined) details.push(`downtime ~${formatMs(ram.expectedDowntimeMs)} ms`);
    return { frac: null, phase: f.phase, details, link: f.link, ...(ram ? { ramRound: ram.round } : {}) };
  }
  const verb = f.moved.verb === 'served' ? 'served ' : '';
  return {
    frac: f.frac,
    phase: f.phase,
    details: [`${verb}demand ${humanBytes(rates.demand)}/s bulk ${humanBytes(rates.bulk)}/s`, f.toCome, `ETA ${formatEta(f.eta)}`],
    link: f.link,
  };
}

const DEST_BEFORE_CUTOVER = new Set(['idle', 'prepared', 'receiving-ram']);

/** D before cut-over: waiting, then RAM rounds; after it: blocks present, what is still only on S, rates, ETA. */
export function destStatus(s: DestSample, rates: Rates, ram: RamRound | null, outcome?: Outcome): Status {
  const before = s.blocksTotal === 0 || (DEST_BEFORE_CUTOVER.has(s.phase) && outcome === undefined);
  return sideStatus(
    {
      phase: s.phase === 'idle' ? 'waiting for the source' : s.phase,
      link: s.link,
      frac: before ? null : fraction(s.blocksPresent, s.blocksTotal),
      moved: { demand: s.bytesFetchedDemand, bulk: s.bytesFetchedBulk, verb: 'fetched' },
      toCome: `${humanBytes(s.bytesOnlyOnSource)} only on S`,
      eta: etaSeconds(s, rates.demand + rates.bulk),
    },
    rates,
    ram,
    outcome,
  );
}

const SOURCE_PAST_CUTOVER = new Set(['awaiting-finish', 'postcopy', 'confirmed']);

/**
 * S before cut-over: connecting, RAM rounds; after it: bytes served by kind, what D may still lack, ETA. S cannot
 * know what D holds: what it never sent nor found zero is an upper bound (D's guest may have overwritten some), and
 * so is the ETA; D's COMPLETE makes it 0.
 */
export function sourceStatus(s: SourceSample, rates: Rates, ram: RamRound | null, outcome?: Outcome): Status {
  return sideStatus(
    {
      phase: s.phase === 'perform' ? 'pre-copy' : s.phase,
      link: s.link,
      frac: SOURCE_PAST_CUTOVER.has(s.phase) ? fraction(s.bytesTotal - s.bytesOnlyOnSource, s.bytesTotal) : null,
      moved: { demand: s.bytesServedDemand, bulk: s.bytesServedBulk, verb: 'served' },
      toCome: `D lacks up to ${humanBytes(s.bytesOnlyOnSource)}`,
      eta: etaSeconds(s, rates.demand + rates.bulk),
    },
    rates,
    ram,
    outcome,
  );
}

/** One side's figures for a view: what its samples say, and the counters its rates come from. */
export interface Side<S> {
  /** The name in plain lines ('postcopy dest'). */
  label: string;
  counters(s: S): Rates;
  status(s: S, rates: Rates, ram: RamRound | null, outcome?: Outcome): Status;
}

export const DEST_SIDE: Side<DestSample> = {
  label: 'postcopy dest',
  counters: (s) => ({ demand: s.bytesFetchedDemand, bulk: s.bytesFetchedBulk }),
  status: destStatus,
};

export const SOURCE_SIDE: Side<SourceSample> = {
  label: 'postcopy source',
  counters: (s) => ({ demand: s.bytesServedDemand, bulk: s.bytesServedBulk }),
  status: sourceStatus,
};

/**
 * When a plain progress line is due (off a terminal, as `qemu-img convert -p` prints): at the first sample, at each
 * whole percent, phase, link state or RAM round that differs from the last line's, and after PROGRESS_QUIET_LINE_MS
 * with none of those (a stalled migration still says so); at most one line a sample.
 */
export class LineStepper {
  #last: { key: string; t: number } | null = null;

  due(s: Status, t: number): boolean {
    const key = [s.frac === null ? '' : Math.floor(s.frac * 100), s.phase, s.link ?? '', s.ramRound ?? ''].join('/');
    const due = this.#last === null || key !== this.#last.key || t - this.#last.t >= PROGRESS_QUIET_LINE_MS;
    if (due) this.#last = { key, t };
    return due;
  }
}
