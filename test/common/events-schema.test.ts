// schema/events.v1.json itself: a sample of every event passes, and what a reader must be able to rely on fails
// when it is missing or wrong (envelope, types, names). The e2e tests validate the agents' real lines against it.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventErrors, eventSchemaPath } from '../../bench/lib/event-schema.js';

const envelope = (role: 'source' | 'dest', sessionId: string | null = 'a1b2c3d4e5f60718') => ({ schemaVersion: 1, ts: '2026-01-02T03:04:05.678Z', role, sessionId });
const stage = { count: 3, p50Ms: 0.05, p99Ms: 0.2, maxMs: 0.2, buckets: [[0.064, 2], [0.256, 1]] };
const path = { phase: 'probe-bw', minRttMs: 0.2, rttMs: 0.3, bottleneckBytesPerSec: 1e9, windowBytes: 1 << 20, pacingBytesPerSec: 9e8, headroom: true, rounds: 40 };
const store = { bytesFetchedDemand: 4096, bytesFetchedBulk: 1 << 20, zeroBytesSkipped: 0, guestBytesWritten: 0, guestBytesRead: 8192, demandMisses: 1, lateFetchesDropped: 0, commits: 3 };
const progress = { phase: 'postcopy', link: 'up', bytesFromFallback: 0, blocksPresent: 10, blocksTotal: 64, bytesOnlyOnSource: 1 << 22, ...store, demandStages: { total: { count: 1, p50Ms: 0.4, p99Ms: 0.4 } }, path };

/** One valid line per event name, as the agents write them. */
const SAMPLES: Record<string, Record<string, unknown>> = {
  listening: { ...envelope('dest', null), event: 'listening', host: '127.0.0.1', port: 7000, phase: 'idle' },
  phase: { ...envelope('source', null), event: 'phase', phase: 'connecting' },
  link: { ...envelope('dest'), event: 'link', state: 'up', resumed: false, phase: 'idle' },
  'ram-round': { ...envelope('source'), event: 'ram-round', round: 1, pages: 100, bytes: 409600, dirtyRemaining: 3, expectedDowntimeMs: 0.1 },
  cutover: { ...envelope('source'), event: 'cutover', downtimeMs: 42 },
  progress: { ...envelope('dest'), event: 'progress', ...progress },
  complete: { ...envelope('source'), event: 'complete', urgentRequests: 1, bulkRequests: 9, bytesSent: 1 << 20, zeroBytesSkipped: 0 },
  'digest-mismatch': { ...envelope('dest'), event: 'digest-mismatch', blocks: 2 },
  error: { ...envelope('dest'), event: 'error', code: 'PC_ERR_STATE_DIR', message: 'no space' },
  refused: { ...envelope('dest', null), event: 'refused', peer: '127.0.0.1:5000', code: 'PC_ERR_AUTH', message: 'bad ticket' },
  export: { ...envelope('dest'), event: 'export', name: 'disk', uris: ['nbd+unix:///disk?socket=/tmp/s'] },
  fallback: { ...envelope('dest'), event: 'fallback', active: true, bytesFromFallback: 0 },
  'source-away': { ...envelope('dest'), event: 'source-away', awayMs: 30000, bytesOnlyOnSource: 4096, fallback: 'none' },
  'disk-full': { ...envelope('dest'), event: 'disk-full', active: true, image: '/d/img', code: 'ENOSPC', bytesToCome: 4096, message: 'full' },
  'image-io-error': { ...envelope('dest'), event: 'image-io-error', active: false, image: '/d/img', code: 'EIO', bytesToCome: 0, message: 'ok' },
  signal: { ...envelope('source'), event: 'signal', signal: 'SIGTERM', action: 'refused', phase: 'postcopy', bytesOnlySource: 4096 },
  'final-check': { ...envelope('source'), event: 'final-check', blocks: 64, mismatched: 0 },
  hypervisor: { ...envelope('dest'), event: 'hypervisor', side: 'dest', state: 'started', pid: 99, qmp: '/s/qmp', serial: '/s/serial' },
  extents: { ...envelope('source'), event: 'extents', zeroRuns: 2, zeroBytes: 8192, method: 'map', unreadBytes: 8192 },
  summary: {
    ...envelope('dest'), event: 'summary', wallMs: 1200, finishMs: 15, resumes: 0, ...store, demandLatency: { count: 1, p50Ms: 0.4, p99Ms: 0.4, maxMs: 0.4 },
    demandStages: { total: stage }, path, guest: null,
  },
  stages: { ...envelope('source'), event: 'stages', urgentStages: { total: stage } },
  exit: { ...envelope('dest'), event: 'exit', code: 0 },
};

const schemaEventNames = (): string[] => (JSON.parse(readFileSync(eventSchemaPath(), 'utf8')) as { properties: { event: { enum: string[] } } }).properties.event.enum;

describe('schema/events.v1.json', () => {
  it('has a sample here for every event it lists, and each passes', () => {
    expect(Object.keys(SAMPLES).sort()).toEqual([...schemaEventNames()].sort());
    for (const [name, sample] of Object.entries(SAMPLES)) expect(eventErrors(sample), name).toEqual([]);
  });

  it('takes each role\'s shape of a shared event (S\'s summary, D\'s ram-round, D\'s restarted phase)', () => {
    const s = { ...envelope('source'), event: 'summary', wallMs: 900, downtimeMs: 30, precopy: { rounds: 2, pagesSent: 9, bytesSent: 36864, finalPages: 1, bandwidthBytesPerSec: 1e8, converged: true, pausedAtEpochMs: 1.7e12 }, blocks: SAMPLES.complete!, urgentStages: { total: stage }, reconnects: 0, guest: { reads: 1, writes: 2, readMismatches: 0 } };
    const { schemaVersion: _v, ts: _t, role: _r, sessionId: _s, event: _e, ...blocks } = SAMPLES.complete!;
    expect(eventErrors({ ...s, blocks })).toEqual([]);
    expect(eventErrors({ ...envelope('dest'), event: 'ram-round', round: 1, pages: 100, dirtyRemaining: 3 })).toEqual([]);
    expect(eventErrors({ ...envelope('source'), event: 'progress', phase: 'postcopy', link: 'up', bytesTotal: 1 << 26, bytesOnlyOnSource: 1 << 20, bytesServedDemand: 4096, bytesServedBulk: 1 << 22 })).toEqual([]);
    // Each role's progress needs its own figures.
    expect(eventErrors({ ...envelope('source'), event: 'progress', ...progress })).not.toEqual([]);
    // A restarted D's first phase line carries its progress figures.
    expect(eventErrors({ ...envelope('dest'), event: 'phase', restarted: true, ...progress })).toEqual([]);
  });

  it('passes the sample lines EVENTS.md shows', () => {
    const doc = readFileSync(join(dirname(eventSchemaPath()), '..', 'EVENTS.md'), 'utf8');
    const lines = [...doc.matchAll(/^\{"schemaVersion".*\}$/gm)].map((m) => JSON.parse(m[0]) as unknown);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(eventErrors(l)).toEqual([]);
  });

  it.each(['schemaVersion', 'ts', 'role', 'sessionId', 'event'])('refuses a line without %s', (field) => {
    const { [field]: _gone, ...rest } = SAMPLES.progress!;
    expect(eventErrors(rest).join('\n')).toContain(`must have required property '${field}'`);
  });

  it('refuses wrong types and values, unknown fields, unknown events, the old names and the other role', () => {
    const bad = (over: Record<string, unknown>, base = SAMPLES.progress!) => eventErrors({ ...base, ...over });
    expect(bad({ blocksPresent: '10' })).not.toEqual([]);
    expect(bad({ sessionId: 7 })).not.toEqual([]);
    expect(bad({ schemaVersion: 2 })).not.toEqual([]);
    expect(bad({ role: 'demo' })).not.toEqual([]);
    expect(bad({ ts: 'yesterday' })).not.toEqual([]);
    expect(bad({ event: 'progres' })).not.toEqual([]);
    expect(bad({ etaSec: 3 })).not.toEqual([]);
    expect(bad({ role: 'source' })).not.toEqual([]); // S's progress has its own fields: D's sample is not one
    expect(bad({ awaySec: 30 }, SAMPLES['source-away'])).not.toEqual([]);
    const { awayMs: _ms, ...withoutMs } = SAMPLES['source-away']!;
    expect(eventErrors({ ...withoutMs, awaySec: 30 })).not.toEqual([]);
    expect(bad({ demandLatency: { count: 1, p50: 0.4, p99: 0.4, max: 0.4 } }, SAMPLES.summary)).not.toEqual([]);
    expect(bad({ demandStages: { total: { ...stage, p99Us: 200 } } }, SAMPLES.summary)).not.toEqual([]);
  });
});
