// The progress views: the ETA, rates that are never NaN, a bar that ends at 100 %, logs whole above it, plain lines
// one per step off a terminal, S's side, and which view a command gets.
import { describe, expect, it } from 'vitest';
import { RateMeter } from '../../src/common/rate-meter.js';
import { DEST_SIDE, etaSeconds, SOURCE_SIDE, sourceStatus, statusText, type DestSample, type SourceSample } from '../../src/cli/progress.js';
import { progressMode, ProgressView, StatusLine } from '../../src/cli/terminal.js';
import { PROGRESS_QUIET_LINE_MS } from '../../src/cli/constants.js';
import { createRootLogger } from '../../src/common/logger.js';
import { screenLines } from '../helpers/screen.js';

const MiB = 1024 * 1024;
const dest = (over: Partial<DestSample> = {}): DestSample => ({
  phase: 'postcopy',
  link: 'up',
  blocksPresent: 10,
  blocksTotal: 100,
  bytesFetchedDemand: 0,
  bytesFetchedBulk: 0,
  bytesOnlyOnSource: 500 * MiB,
  ...over,
});
const source = (over: Partial<SourceSample> = {}): SourceSample => ({
  phase: 'postcopy',
  link: 'up',
  bytesTotal: 1000 * MiB,
  bytesOnlyOnSource: 600 * MiB,
  bytesServedDemand: 0,
  bytesServedBulk: 0,
  ...over,
});

/** A view drawing into a string, on a clock the test moves. */
function harness<S>(side: typeof DEST_SIDE | typeof SOURCE_SIDE, mode: 'bar' | 'lines', columns = 200) {
  let raw = '';
  let now = 0;
  const view = new ProgressView(side as never, mode, { write: (t) => void (raw += t), columns: () => columns, now: () => now });
  return {
    view: view as unknown as ProgressView<S>,
    raw: () => raw,
    screen: () => screenLines(raw).filter((l) => l.length > 0),
    at: (t: number) => void (now = t),
  };
}

describe('progress ETA', () => {
  const sample = (path?: DestSample['path']) => dest(path ? { path } : {});
  it('uses the measured bottleneck (plus a round trip) over the rate of the last interval', () => {
    expect(etaSeconds(sample({ bottleneckBytesPerSec: 100 * MiB, minRttMs: 80 }), 10 * MiB)).toBeCloseTo(5.08, 6);
  });
  it('falls back to the recent rate before the path is measured, and says nothing without either', () => {
    expect(etaSeconds(sample({ bottleneckBytesPerSec: null, minRttMs: null }), 50 * MiB)).toBe(10);
    expect(etaSeconds(sample(), 0)).toBeNull();
  });
  it('is 0 once nothing is left, whatever the rate', () => {
    expect(etaSeconds(dest({ bytesOnlyOnSource: 0 }), 0)).toBe(0);
  });
});

describe('rates', () => {
  it('are 0 (not NaN) before two samples apart in time, for a missing counter, and after a counter restarts', () => {
    const m = new RateMeter();
    expect(m.sample(0, 100)).toBe(0);
    expect(m.sample(0, 200)).toBe(0); // no time passed
    expect(m.sample(1000, 1100)).toBe(1000);
    expect(m.sample(2000, Number.NaN)).toBe(0);
    expect(m.sample(3000, 50)).toBe(0);
    expect(m.sample(4000, 10)).toBe(0); // went down: a restart, not a negative rate
  });
  it('average over the window, not the last interval', () => {
    const m = new RateMeter();
    m.sample(0, 0);
    m.sample(1000, 3 * MiB);
    expect(m.sample(2000, 3 * MiB)).toBe(1.5 * MiB); // a second without a byte halves it, not zeroes it
  });
});

describe('the bar on a terminal', () => {
  it('shows an idle destination without NaN, Infinity or a negative figure', () => {
    const h = harness<DestSample>(DEST_SIDE, 'bar');
    // D before its store exists: no counters at all, no blocks.
    h.view.update({ phase: 'idle', link: 'down', blocksPresent: 0, blocksTotal: 0, bytesOnlyOnSource: 0 } as unknown as DestSample);
    h.at(500);
    h.view.update(dest({ bytesFetchedDemand: undefined as unknown as number }));
    h.view.update(dest()); // no time passed
    h.at(1000);
    h.view.update(dest());
    const text = h.raw();
    expect(text).not.toMatch(/NaN|Infinity|-\d/);
    expect(h.screen().at(-1)).toMatch(/^\[###\.+\] 10\.0% postcopy \| demand 0 B\/s bulk 0 B\/s \| 500\.0 MiB only on S \| ETA -- \| link up$/);
  });

  it('ends on the final state at 100 %, drawn before the newline, even when the last tick read less', () => {
    const h = harness<DestSample>(DEST_SIDE, 'bar');
    h.view.update(dest({ blocksPresent: 992, blocksTotal: 1000, bytesFetchedBulk: 10 * MiB }));
    h.at(500);
    h.view.finish(dest({ phase: 'complete', blocksPresent: 1000, blocksTotal: 1000, bytesOnlyOnSource: 0, bytesFetchedDemand: MiB, bytesFetchedBulk: 20 * MiB }), 'complete');
    expect(h.raw().endsWith('\n')).toBe(true);
    expect(h.screen()).toEqual([`[${'#'.repeat(30)}] 100.0% complete | fetched 21.0 MiB (demand 1.0 MiB, bulk 20.0 MiB)`]);
    h.view.update(dest()); // a tick after the end draws nothing
    expect(h.screen()).toHaveLength(1);
  });

  it('says a failure plainly on its last line', () => {
    const h = harness<DestSample>(DEST_SIDE, 'bar');
    h.view.update(dest());
    h.view.finish(dest({ phase: 'aborted' }), 'failed');
    expect(h.screen()).toEqual([`[###${'.'.repeat(27)}] 10.0% FAILED (aborted) | fetched 0 B (demand 0 B, bulk 0 B) | 500.0 MiB only on S`]);
  });

  it('writes a log line whole above the bar and draws the bar again below it', () => {
    let raw = '';
    const line = new StatusLine((t) => void (raw += t), () => 80);
    line.show('[##....] 33.0% postcopy | a long status line that is longer than what follows');
    line.show('[###...] 50.0% postcopy');
    line.above('[12:00:00.000] INFO: link lost {"phase":"postcopy"}\n');
    line.above('a notice without its newline');
    line.end();
    expect(screenLines(raw)).toEqual(['[12:00:00.000] INFO: link lost {"phase":"postcopy"}', 'a notice without its newline', '[###...] 50.0% postcopy', '']);
  });

  it('keeps the bar within the terminal width (a wrapped line cannot be redrawn)', () => {
    const h = harness<DestSample>(DEST_SIDE, 'bar', 40);
    h.view.update(dest());
    expect(h.screen().every((l) => l.length <= 39)).toBe(true);
  });

  it('has the logger write readable lines through it, never JSON', () => {
    let raw = '';
    const line = new StatusLine((t) => void (raw += t), () => 200);
    const log = createRootLogger({ level: 'info', name: 'postcopy-dest', above: (t) => line.above(t) });
    line.show('[#.....] 10.0% postcopy');
    log.child({ role: 'dest' }).warn({ phase: 'postcopy', err: new Error('peer went away') }, 'migration link lost');
    log.debug('not at info');
    const screen = screenLines(raw).filter((l) => l.length > 0);
    expect(screen).toHaveLength(2);
    expect(screen[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: migration link lost \{"phase":"postcopy","err":\{"type":"Error","message":"peer went away"\}\}$/);
    expect(screen[1]).toBe('[#.....] 10.0% postcopy');
  });
});

describe('plain lines off a terminal (--progress)', () => {
  it('prints one line per whole percent, phase or link change, the quiet interval, and the final state', () => {
    const h = harness<DestSample>(DEST_SIDE, 'lines');
    const at = (t: number, s: Partial<DestSample>) => {
      h.at(t);
      h.view.update(dest(s));
    };
    at(0, { phase: 'receiving-ram', blocksPresent: 0 });
    at(500, { phase: 'receiving-ram', blocksPresent: 0 }); // same step
    at(1000, { blocksPresent: 10 }); // phase change
    at(1500, { blocksPresent: 10 }); // same
    at(2000, { blocksPresent: 10, blocksTotal: 100 }); // same
    at(2500, { blocksPresent: 105, blocksTotal: 1000 }); // 10.5 %: still 10
    at(3000, { blocksPresent: 110, blocksTotal: 1000 }); // 11 %
    at(3500, { blocksPresent: 110, blocksTotal: 1000, link: 'down' }); // link
    at(3500 + PROGRESS_QUIET_LINE_MS - 1, { blocksPresent: 110, blocksTotal: 1000, link: 'down' });
    at(3500 + PROGRESS_QUIET_LINE_MS, { blocksPresent: 110, blocksTotal: 1000, link: 'down' }); // quiet too long
    h.view.finish(dest({ phase: 'confirmed', blocksPresent: 1000, blocksTotal: 1000, bytesOnlyOnSource: 0 }), 'complete');
    const lines = h.raw().split('\n').slice(0, -1);
    expect(lines.map((l) => l.replace(/ \|.*/, ''))).toEqual([
      'postcopy dest: receiving-ram',
      'postcopy dest: 10.0% postcopy',
      'postcopy dest: 11.0% postcopy',
      'postcopy dest: 11.0% postcopy',
      'postcopy dest: 11.0% postcopy',
      'postcopy dest: 100.0% confirmed',
    ]);
    expect(h.raw()).not.toMatch(/\r|\x1b|NaN|Infinity/);
    expect(lines[3]).toMatch(/link down$/);
  });
});

describe("S's view", () => {
  it('shows RAM rounds before cut-over, at once when a round ends', () => {
    const h = harness<SourceSample>(SOURCE_SIDE, 'lines');
    h.view.update(source({ phase: 'perform' }));
    h.view.ramRound({ round: 1, dirtyRemaining: 256, bytes: 64 * MiB, expectedDowntimeMs: 133.937 });
    h.view.ramRound({ round: 2, dirtyRemaining: 2, bytes: MiB, expectedDowntimeMs: 1.28 });
    expect(h.raw().split('\n').slice(0, -1)).toEqual([
      'postcopy source: pre-copy | link up',
      'postcopy source: pre-copy | RAM round 1, 64.0 MiB sent, 1.0 MiB dirty | downtime ~134 ms | link up',
      'postcopy source: pre-copy | RAM round 2, 1.0 MiB sent, 8.0 KiB dirty | downtime ~1.3 ms | link up',
    ]);
  });

  it('after cut-over: bytes served by kind, what D may still lack, and 100 % once D said COMPLETE', () => {
    const h = harness<SourceSample>(SOURCE_SIDE, 'bar');
    h.view.update(source());
    h.at(1000);
    h.view.update(source({ bytesOnlyOnSource: 500 * MiB, bytesServedDemand: 10 * MiB, bytesServedBulk: 90 * MiB }));
    expect(h.screen().at(-1)).toBe(`[${'#'.repeat(15)}${'.'.repeat(15)}] 50.0% postcopy | served demand 10.0 MiB/s bulk 90.0 MiB/s | D lacks up to 500.0 MiB | ETA 5s | link up`);
    h.view.finish(source({ phase: 'confirmed', bytesOnlyOnSource: 0, bytesServedDemand: 10 * MiB, bytesServedBulk: 400 * MiB }), 'complete');
    expect(h.screen().at(-1)).toBe(`[${'#'.repeat(30)}] 100.0% confirmed | served 410.0 MiB (demand 10.0 MiB, bulk 400.0 MiB)`);
  });

  it('has no fraction before cut-over, and a rollback says so', () => {
    const rates = { demand: 0, bulk: 0 };
    expect(statusText(sourceStatus(source({ phase: 'connecting' }), rates, null), true)).toBe('connecting | link up');
    expect(statusText(sourceStatus(source({ phase: 'rolled-back' }), rates, null, 'failed'), true)).toBe('FAILED (rolled-back) | served 0 B (demand 0 B, bulk 0 B)');
  });
});

describe('which view a command gets', () => {
  const mode = (flag: boolean, isTTY: boolean, env: NodeJS.ProcessEnv = {}) => progressMode({ flag, isTTY, env });
  it('a bar on a terminal, unless CI=true without --progress; lines off one with --progress; TERM=dumb gets lines', () => {
    expect(mode(false, true)).toBe('bar');
    expect(mode(false, true, { CI: 'true' })).toBe('off');
    expect(mode(true, true, { CI: 'true' })).toBe('bar');
    expect(mode(false, false)).toBe('off');
    expect(mode(true, false)).toBe('lines');
    expect(mode(true, true, { TERM: 'dumb' })).toBe('lines');
    expect(mode(false, true, { TERM: 'dumb' })).toBe('off');
  });
});
