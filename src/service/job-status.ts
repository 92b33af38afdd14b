// A job's status as the API shows it: its record, its agent's figures (live, or the last ones once it ended) and
// what the service adds (rate and ETA, its caps).
import type { JobProgress } from './job-launcher.js';
import type { JobRecord } from './job-store.js';
import type { JobStatus } from './job-types.js';

export interface ServiceFigures {
  /** Over the last few seconds while it runs; null otherwise. */
  rateBytesPerSecond: number | null;
  /** The job's own cap (set-speed's, or its options'). */
  ownCap: number | null;
  /** What it may use now, within its fair share; null when it does not run. */
  effectiveCap: number | null;
}

export function statusOf(record: Omit<JobRecord, 'kind'>, p: JobProgress | null, o: ServiceFigures): JobStatus {
  const running = record.state === 'running';
  const total = p?.dataTotalBytes ?? 0;
  const processed = p?.dataProcessedBytes ?? 0;
  const remaining = Math.max(0, total - processed);
  const rate = running ? o.rateBytesPerSecond : null;
  return {
    id: record.id,
    role: record.role,
    state: record.state,
    phase: running ? (p?.phase ?? 'starting') : record.state,
    sessionId: p?.sessionId ?? null,
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    endedAt: record.endedAt,
    dataTotalBytes: total,
    dataProcessedBytes: processed,
    dataRemainingBytes: remaining,
    bytesOnlyOnSource: p?.bytesOnlyOnSource ?? 0,
    rateBytesPerSecond: rate,
    etaSeconds: running && total > 0 ? etaSeconds(remaining, rate) : null,
    downtimeMs: p?.downtimeMs ?? null,
    demandLatency: p?.demandLatency ?? { count: 0, p50Ms: null, p99Ms: null },
    reconnects: p?.reconnects ?? 0,
    bytesByClass: p?.bytesByClass ?? { urgent: 0, bulk: 0 },
    speedLimitBytesPerSecond: o.ownCap,
    effectiveLimitBytesPerSecond: o.effectiveCap,
    maxDowntimeMs: record.role === 'source' ? (p?.maxDowntimeMs ?? record.maxDowntimeMs) : null,
    pastCutover: p?.pastCutover ?? false,
    error: record.error,
    options: record.options,
  };
}

/** Seconds until `remaining` bytes are in at `rate`; null when nothing moves. */
function etaSeconds(remaining: number, rate: number | null): number | null {
  if (remaining === 0) return 0;
  if (rate === null || rate <= 0) return null;
  return Math.ceil(remaining / rate);
}
