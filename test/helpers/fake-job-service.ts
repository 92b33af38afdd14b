// An in-memory JobService for the control API's and the CLI clients' tests: jobs are records the test moves along
// by hand (`update`), and every refusal the interface documents can be provoked.
import { ApiError, FINISHED_STATES, type JobRole, type JobService, type JobStatus, type SubmitRequest } from '../../src/service/job-types.js';

/** A full status as the service would give it, with `over` on top. */
export function jobStatus(id: string, role: JobRole, over: Partial<JobStatus> = {}): JobStatus {
  return {
    id,
    role,
    state: 'queued',
    phase: 'queued',
    sessionId: null,
    createdAt: '2026-12-04T04:00:00.000Z',
    startedAt: null,
    endedAt: null,
    dataTotalBytes: 8 * 2 ** 30,
    dataProcessedBytes: 0,
    dataRemainingBytes: 8 * 2 ** 30,
    bytesOnlyOnSource: 8 * 2 ** 30,
    rateBytesPerSecond: null,
    etaSeconds: null,
    downtimeMs: null,
    demandLatency: { count: 0, p50Ms: null, p99Ms: null },
    reconnects: 0,
    bytesByClass: { urgent: 0, bulk: 0 },
    speedLimitBytesPerSecond: null,
    effectiveLimitBytesPerSecond: null,
    maxDowntimeMs: role === 'source' ? 50 : null,
    pastCutover: false,
    error: null,
    options: {},
    ...over,
  };
}

const notFound = (id: string) => new ApiError(404, 'not_found', `no job '${id}'`);

export class FakeJobService implements JobService {
  readonly jobs = new Map<string, JobStatus>();
  /** Every call, in order: `submit`, `get id`, ... (a request the API refused never shows here). */
  readonly calls: string[] = [];
  /** When set, every method throws it (a bug in the service: the API must answer 500 without its stack). */
  broken: Error | null = null;
  /** When set, submit refuses with it (the service's own check of an option's value: 400). */
  refuseSubmit: ApiError | null = null;
  #next = 1;

  update(id: string, over: Partial<JobStatus>): JobStatus {
    const job = { ...this.#find(id), ...over };
    this.jobs.set(id, job);
    return job;
  }

  async submit(req: SubmitRequest): Promise<JobStatus> {
    this.#call('submit');
    if (this.refuseSubmit) throw this.refuseSubmit;
    const id = req.id ?? `job-${this.#next++}`;
    if (this.jobs.has(id)) throw new ApiError(409, 'id_taken', `a job '${id}' exists already`);
    const job = jobStatus(id, req.role, { options: req.options });
    this.jobs.set(id, job);
    return job;
  }

  list(): JobStatus[] {
    this.#call('list');
    return [...this.jobs.values()];
  }

  get(id: string): JobStatus {
    this.#call(`get ${id}`);
    return this.#find(id);
  }

  async abort(id: string): Promise<JobStatus> {
    this.#call(`abort ${id}`);
    const job = this.#find(id);
    if (job.pastCutover) throw new ApiError(409, 'past_cutover', `job '${id}' is past cut-over: the guest runs on the destination and the source holds blocks it lacks`);
    if (FINISHED_STATES.includes(job.state)) throw new ApiError(409, 'finished', `job '${id}' is ${job.state} already`);
    return this.update(id, { state: 'aborted', phase: 'aborted', endedAt: new Date().toISOString() });
  }

  setSpeed(id: string, bytesPerSecond: number | null): JobStatus {
    this.#call(`setSpeed ${id} ${bytesPerSecond}`);
    const job = this.#find(id);
    if (FINISHED_STATES.includes(job.state)) throw new ApiError(409, 'FINISHED', `job '${id}' is ${job.state}`);
    return this.update(id, { speedLimitBytesPerSecond: bytesPerSecond, effectiveLimitBytesPerSecond: bytesPerSecond });
  }

  async setMaxDowntime(id: string, ms: number): Promise<JobStatus> {
    this.#call(`setMaxDowntime ${id} ${ms}`);
    const job = this.#find(id);
    if (job.role !== 'source') throw new ApiError(409, 'not_source', `job '${id}' is a dest job: the RAM budget is the source's`);
    return this.update(id, { maxDowntimeMs: ms });
  }

  async remove(id: string): Promise<void> {
    this.#call(`remove ${id}`);
    const job = this.#find(id);
    if (!FINISHED_STATES.includes(job.state)) throw new ApiError(409, 'not_finished', `job '${id}' is ${job.state}: abort it first`);
    this.jobs.delete(id);
  }

  #call(what: string): void {
    if (this.broken) throw this.broken;
    this.calls.push(what);
  }

  #find(id: string): JobStatus {
    const job = this.jobs.get(id);
    if (!job) throw notFound(id);
    return job;
  }
}
