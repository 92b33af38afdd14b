// The host service's vocabulary: what a job is, what its status says, and what the control API asks of the service.
// The HTTP layer (control-api.ts), the metrics (metrics.ts) and the CLI clients speak only these types.

export type JobRole = 'source' | 'dest';
export const JOB_ROLES: readonly JobRole[] = ['source', 'dest'];

/**
 * A job's place in the service: `queued` (waiting for a slot of its role), `running` (its agent runs; `phase` says
 * where), then one of the ends. `aborted` means rolled back before cut-over (the guest stays on S).
 */
export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'aborted';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'completed', 'failed', 'aborted'];
export const FINISHED_STATES: readonly JobState[] = ['completed', 'failed', 'aborted'];

/** The standalone command's long options, without the dashes: `{"image": "/a.img", "postcopy-ram": true}`. */
export type JobOptions = Record<string, string | boolean>;

/** POST /v1/jobs. */
export interface SubmitRequest {
  role: JobRole;
  /** Chosen by the caller (idempotent names for a fleet manager); the service picks one when absent. */
  id?: string;
  options: JobOptions;
}

export interface JobError {
  code: string;
  message: string;
}

export interface JobStatus {
  id: string;
  role: JobRole;
  state: JobState;
  /** The agent's phase while it runs (`connecting`, `precopy`, `streaming`, …); the state otherwise (`queued`, …). */
  phase: string;
  sessionId: string | null;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** Bytes of the disk to move. */
  dataTotalBytes: number;
  /** Bytes of the disk that are at D (pulled, or written there by the guest). */
  dataProcessedBytes: number;
  dataRemainingBytes: number;
  /** Bytes that exist only on S (after cut-over: what losing S would lose). */
  bytesOnlyOnSource: number;
  /** Over the last few seconds; null before any data moved. */
  rateBytesPerSecond: number | null;
  etaSeconds: number | null;
  /** Guest paused on the way over (S's figure; null until cut-over, or on D). */
  downtimeMs: number | null;
  demandLatency: { count: number; p50Ms: number | null; p99Ms: number | null };
  reconnects: number;
  /** Block data moved, by class: urgent (demand reads) and bulk (the background stream). */
  bytesByClass: { urgent: number; bulk: number };
  /** The job's own cap (set-speed), null when uncapped. */
  speedLimitBytesPerSecond: number | null;
  /** What the job may use now: its own cap within its fair share of the host's --max-bandwidth. */
  effectiveLimitBytesPerSecond: number | null;
  /** S only: the RAM cut-over budget; null on D. */
  maxDowntimeMs: number | null;
  /** True once the guest runs on D: an abort is refused from then on. */
  pastCutover: boolean;
  error: JobError | null;
  options: JobOptions;
}

/** An error the API answers with: its HTTP status, a stable code and one line for a human. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** What the control API asks of the service. Every method throws ApiError for a request it refuses. */
export interface JobService {
  submit(req: SubmitRequest): Promise<JobStatus>;
  list(): JobStatus[];
  /** 404 when unknown. */
  get(id: string): JobStatus;
  /** Queued: dropped. Before cut-over: rolled back (resolves once it is). After cut-over: 409 with the reason. */
  abort(id: string): Promise<JobStatus>;
  /** The job's own cap, live; null lifts it. Demand reads are never throttled. */
  setSpeed(id: string, bytesPerSecond: number | null): JobStatus;
  /** S's RAM cut-over budget, live (409 on D or past cut-over). */
  setMaxDowntime(id: string, ms: number): Promise<JobStatus>;
  /** A finished job's record and its directory (409 while it is queued or running). */
  remove(id: string): Promise<void>;
}

/** What the service tells its metrics beyond the statuses: each demand fetch's latency as it is measured. */
export interface ServiceObserver {
  demandFetch(role: JobRole, seconds: number): void;
}
