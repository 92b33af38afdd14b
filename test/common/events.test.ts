// The events file is for orchestrators: every line carries the envelope, idle progress does not flood it, and
// losing it (a full disk) must never stop a migration.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EVENTS_SCHEMA_VERSION, PROGRESS_IDLE_SAMPLES } from '../../src/common/constants.js';
import { JsonLinesEvents } from '../../src/common/events.js';

function eventsFile(): { path: string; lines: () => Array<Record<string, unknown>>; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-events-'));
  const path = join(dir, 'ev.jsonl');
  const lines = () => readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { path, lines, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** D's progress sample as dest-command takes it: moving counters, plus figures that jitter on their own. */
const sample = (blocksPresent: number, jitter: number) => ({
  phase: 'postcopy', link: 'up', blocksPresent, blocksTotal: 100, bytesOnlyOnSource: (100 - blocksPresent) * 4096, guestBytesRead: jitter * 512,
  path: { minRttMs: 0.2, rttMs: 0.2 + jitter / 1000, bottleneckBytesPerSec: 1e9 + jitter, windowBytes: 1 << 20, rounds: jitter },
  demandStages: { total: { count: 1, p50Ms: 0.3 + jitter / 1000, p99Ms: 0.5 } },
});

describe('JsonLinesEvents', () => {
  let f: ReturnType<typeof eventsFile>;
  beforeEach(() => {
    f = eventsFile();
  });
  afterEach(() => {
    vi.restoreAllMocks();
    f.cleanup();
  });

  it('puts the envelope on every line: version, time, role, the session once known (null before), the event', () => {
    const events = new JsonLinesEvents(f.path, 'source');
    events.emit('phase', { phase: 'connecting' });
    events.setSession('c0ffee');
    // A payload field named like an envelope field does not replace it.
    events.emit('link', { state: 'resumed', role: 'dest', sessionId: 'other', event: 'nope', schemaVersion: 9 });
    events.close();
    const [a, b] = f.lines();
    expect(Object.keys(a!).slice(0, 5)).toEqual(['schemaVersion', 'ts', 'role', 'sessionId', 'event']);
    expect(a).toMatchObject({ schemaVersion: EVENTS_SCHEMA_VERSION, role: 'source', sessionId: null, event: 'phase', phase: 'connecting' });
    expect(Date.parse(String(a!.ts))).not.toBeNaN();
    expect(b).toMatchObject({ schemaVersion: EVENTS_SCHEMA_VERSION, role: 'source', sessionId: 'c0ffee', event: 'link', state: 'resumed' });
  });

  it('writes progress when it moved, else every PROGRESS_IDLE_SAMPLES-th sample, and the held-back last one before the next event', () => {
    const events = new JsonLinesEvents(f.path, 'dest');
    const seen: unknown[] = [];
    events.onEvent((e, fields) => e === 'progress' && seen.push(fields));
    events.emit('progress', sample(1, 0)); // first: written
    events.emit('progress', sample(2, 1)); // moved: written
    // Idle: only the jittering figures change; one line per PROGRESS_IDLE_SAMPLES samples.
    for (let i = 0; i < 2 * PROGRESS_IDLE_SAMPLES + 3; i++) events.emit('progress', sample(2, i + 2));
    events.emit('phase', { phase: 'complete' });
    events.close();
    const progress = f.lines().filter((l) => l.event === 'progress');
    expect(progress.map((l) => l.blocksPresent)).toEqual([1, 2, 2, 2, 2]);
    // The idle heartbeats, then the last sample taken (its own figures), held back until the next event.
    expect(progress.map((l) => (l.path as { rounds: number }).rounds)).toEqual([0, 1, PROGRESS_IDLE_SAMPLES + 1, 2 * PROGRESS_IDLE_SAMPLES + 1, 2 * PROGRESS_IDLE_SAMPLES + 4]);
    expect(f.lines().slice(-2).map((l) => l.event)).toEqual(['progress', 'phase']);
    // The terminal bar still sees every sample.
    expect(seen).toHaveLength(2 * PROGRESS_IDLE_SAMPLES + 5);
  });

  it('writes a held-back sample at close, and nothing more when the last sample was written', () => {
    const events = new JsonLinesEvents(f.path, 'dest');
    events.emit('progress', sample(1, 0));
    events.emit('progress', { ...sample(1, 0), link: 'down' });
    events.emit('exit', { code: 0 });
    events.emit('progress', { ...sample(1, 7), link: 'down' });
    events.close();
    expect(f.lines().map((l) => [l.event, l.link])).toEqual([['progress', 'up'], ['progress', 'down'], ['exit', undefined], ['progress', 'down']]);
  });

  it('on a full disk (/dev/full) emit does not throw and says so once per episode', () => {
    const said: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      said.push(String(chunk));
      return true;
    });
    const events = new JsonLinesEvents('/dev/full', 'dest');
    for (let i = 0; i < 100; i++) events.emit('exit', { code: i });
    events.close();
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/cannot write to the events file \(ENOSPC\)/);
  });
});
