// What the service asks of whoever builds a job's agent: the CLI layer brings launchers that read the same options,
// with the same checks, as the standalone commands (one source of truth), and the service runs what they return.
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { ListenerFactory } from '../link/listener.js';
import type { JobError, JobOptions, JobRole, JobState } from './job-types.js';

/** Where a job lives and what the host gives it. */
export interface JobContext {
  id: string;
  /** DIR/jobs/ID: 0700, the service's. */
  jobDir: string;
  /** The agent's state dir (DIR/jobs/ID/state): a restart with it resumes the session. */
  stateDir: string;
  log: Logger;
  events: EventSink;
  /** The job's share of the host's bandwidth, with its own cap applied (bulk only). */
  bulkRate: BulkRateLimit;
  /** D: the host's one migration port, routing this job's ticket here. */
  migrationPort: (ticketId: string) => ListenerFactory;
  /** D: each demand fetch's latency, in ms (the service's histogram). */
  onDemandLatency: (ms: number) => void;
}

/** The figures a running job reports; the service adds rate, ETA and the rest. */
export interface JobProgress {
  phase: string;
  sessionId: string | null;
  dataTotalBytes: number;
  dataProcessedBytes: number;
  bytesOnlyOnSource: number;
  downtimeMs: number | null;
  demandLatency: { count: number; p50Ms: number | null; p99Ms: number | null };
  reconnects: number;
  bytesByClass: { urgent: number; bulk: number };
  maxDowntimeMs: number | null;
  pastCutover: boolean;
}

export interface JobOutcome {
  state: Extract<JobState, 'completed' | 'failed' | 'aborted'>;
  error: JobError | null;
}

/** Refused: past cut-over (the guest runs on D, only finishing frees S), or the migration is ending anyway. */
export type AbortAnswer = { accepted: true } | { accepted: false; pastCutover: boolean; reason: string };

/** A job's agent, running. */
export interface RunningJob {
  progress(): JobProgress;
  /** Settles once the migration ended, one way or another (never rejects). */
  readonly done: Promise<JobOutcome>;
  /** Before cut-over: roll back (done settles as aborted). After: refused, with the reason. */
  abort(reason: string): AbortAnswer;
  /** S's RAM budget, live; false when it no longer applies. */
  setMaxDowntime(ms: number): boolean;
  /** The service stops (its state is kept for the next start) or the finished job's record goes: let go of everything. */
  close(): Promise<void>;
}

export interface JobCheck {
  ticketId: string | null;
  image: string;
  /** The job's own --max-bandwidth, if its options give one: its cap within the host's share until set-speed. */
  bulkBytesPerSecond: number | null;
}

export interface JobLauncher {
  /**
   * Throws a UsageError for options the standalone command would refuse (checked at submit, before queueing).
   * Returns what keeps jobs apart: D's ticket id (its route on the port) and the image (absolute path or URI).
   */
  check(role: JobRole, options: JobOptions, stateDir: string): Promise<JobCheck>;
  /** Builds and starts the job's agent (after a restart, from its state dir). */
  start(role: JobRole, options: JobOptions, ctx: JobContext): Promise<RunningJob>;
}
