// The host service: every migration of the host as a job, with its record on disk, admitted up to --max-jobs per
// role (the rest queued in order), each running the same agents the standalone commands run, its bulk traffic
// within its share of the host's --max-bandwidth. A restart with the same root picks every job up where it was.
import { deferred } from '../common/deferred.js';
import { BusyError, RolledBackError, isPostcopyError, type PostcopyError } from '../common/errors.js';
import { JsonLinesEvents, nullEvents } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { join } from 'node:path';
import { refuseConnection } from '../link/link.js';
import type { DestListener, ListenerFactory } from '../link/listener.js';
import type { BandwidthPool, PoolShare } from './bandwidth-pool.js';
import type { JobCheck, JobLauncher, RunningJob } from './job-launcher.js';
import { RateMeter } from '../common/rate-meter.js';
import { statusOf } from './job-status.js';
import { JOB_ID_PATTERN, JobStore, type JobRecord } from './job-store.js';
import { ApiError, FINISHED_STATES, type JobRole, type JobService, type JobStatus, type ServiceObserver, type SubmitRequest } from './job-types.js';

/** The host's one migration port, as the service uses it. */
export interface MigrationPortRoutes {
  listenerFor(ticketId: string): ListenerFactory;
}

export interface HostServiceOptions {
  root: string;
  maxJobs: number;
  pool: BandwidthPool;
  launcher: JobLauncher;
  port: MigrationPortRoutes;
  log: Logger;
  observer: ServiceObserver;
  /** How often running jobs are sampled for rate and ETA. */
  sampleMs?: number;
}

/** What the service knows of a job beyond its record. */
interface Job {
  record: Omit<JobRecord, 'kind'>;
  /** D: its ticket's id (routes its source to it); both: the image, which one unfinished job at a time may use. */
  ticketId: string | null;
  image: string;
  /** The options' own cap (--max-bandwidth); set-speed overrides it. */
  optionsCap: number | null;
  running: RunningJob | null;
  share: PoolShare | null;
  /** D: its ticket held on the port while queued ("busy": its source retries) or once ended without completing ("gone"). */
  hold: DestListener | null;
  rate: RateMeter;
  /** Its processed bytes' rate at the last sample (null before the first). */
  rateNow: number | null;
  /** Launching (its agent is being built): an abort waits for it. */
  starting: Promise<void> | null;
  /** Settles once its agent's end has been handled (recorded, or left for the next start when the service stops). */
  recorded: Promise<void> | null;
  abortRequested: boolean;
}

const DEFAULT_SAMPLE_MS = 1_000;
/** How long a stopping service waits for an agent's rollback (told by its close) to be recorded. */
const CLOSE_SETTLE_MS = 5_000;

export class HostService implements JobService {
  readonly #o: HostServiceOptions;
  readonly #store: JobStore;
  readonly #jobs = new Map<string, Job>();
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #closing = false;
  /** Records of the last run are being read: nothing is admitted yet. */
  #loading = true;
  readonly #ready = deferred<void>();

  constructor(opts: HostServiceOptions) {
    this.#o = opts;
    this.#log = opts.log;
    this.#store = new JobStore(opts.root);
  }

  /**
   * Read the jobs of a previous run: those that were running start again (first, in their order), the queued ones
   * queue. Nothing is admitted until every record is read, so a slot freed by a job that cannot start again goes to
   * the oldest queued job once, after the jobs that were running.
   */
  /** Take the root for this process (before anything listens): a second service on the same root is refused. */
  claimRoot(): void {
    this.#store.lock();
  }

  async start(): Promise<void> {
    this.claimRoot();
    const records = this.#store.load((dir, why) => this.#log.warn({ dir, why }, 'skipped a directory under jobs/'));
    const wereRunning: Job[] = [];
    for (const record of records) {
      const job = this.#newJob(record);
      this.#jobs.set(record.id, job);
      if (FINISHED_STATES.includes(record.state)) continue;
      try {
        const found = await this.#o.launcher.check(record.role, this.#optionsOf(record), this.#stateDirOf(record.id));
        Object.assign(job, { ticketId: found.ticketId, image: found.image, optionsCap: found.bulkBytesPerSecond });
      } catch (e) {
        this.#end(job, { state: 'failed', error: errorOf(e) });
        continue;
      }
      if (record.state === 'running') wereRunning.push(job);
      else await this.#holdTicket(job);
    }
    this.#log.info({ jobs: records.length, resumed: wereRunning.length }, 'jobs loaded');
    this.#loading = false;
    for (const job of wereRunning) this.#launch(job);
    for (const role of ['source', 'dest'] as const) this.#admit(role);
    this.#timer = setInterval(() => this.#sample(), this.#o.sampleMs ?? DEFAULT_SAMPLE_MS);
    this.#timer.unref();
    this.#ready.resolve();
  }

  async submit(req: SubmitRequest): Promise<JobStatus> {
    // A submit that comes while the jobs of the last run are read waits for them (its id and image are checked against them).
    await this.#ready.promise;
    if (this.#closing) throw new ApiError(409, 'SHUTTING_DOWN', 'the service is stopping; submit again once it is back');
    const id = req.id ?? this.#newId();
    if (!JOB_ID_PATTERN.test(id)) throw new ApiError(400, 'BAD_ID', `job id '${id}' must match ${JOB_ID_PATTERN.source}`);
    if (this.#jobs.has(id)) throw new ApiError(409, 'ID_TAKEN', `a job '${id}' exists already`);
    let found: JobCheck;
    try {
      found = await this.#o.launcher.check(req.role, req.options, this.#stateDirOf(id));
    } catch (e) {
      throw new ApiError(400, isPostcopyError(e) ? e.code : 'BAD_OPTIONS', e instanceof Error ? e.message : String(e));
    }
    for (const other of this.#jobs.values()) {
      if (FINISHED_STATES.includes(other.record.state)) continue;
      if (other.image === found.image && other.record.role === req.role) {
        throw new ApiError(409, 'IMAGE_BUSY', `job '${other.record.id}' (${other.record.state}) migrates ${found.image} already`);
      }
      if (found.ticketId !== null && other.ticketId === found.ticketId) {
        throw new ApiError(409, 'TICKET_BUSY', `job '${other.record.id}' (${other.record.state}) has the same ticket: each migration needs its own`);
      }
    }
    const record: JobRecord = {
      kind: 'postcopy-job/1',
      id,
      role: req.role,
      options: req.options,
      state: 'queued',
      createdAt: new Date().toISOString(),
      startedAt: null,
      endedAt: null,
      error: null,
      speedLimitBytesPerSecond: null,
      speedSet: false,
      maxDowntimeMs: null,
      last: null,
    };
    if (!this.#store.create(record)) throw new ApiError(409, 'ID_TAKEN', `${this.#store.dirOf(id)} exists already`);
    const job = this.#newJob(record);
    Object.assign(job, { ticketId: found.ticketId, image: found.image, optionsCap: found.bulkBytesPerSecond });
    this.#jobs.set(id, job);
    this.#log.info({ job: id, role: req.role }, 'job submitted');
    await this.#holdTicket(job);
    this.#admit(req.role);
    return this.#status(job);
  }

  list(): JobStatus[] {
    return [...this.#jobs.values()].map((j) => this.#status(j));
  }

  get(id: string): JobStatus {
    return this.#status(this.#job(id));
  }

  async abort(id: string): Promise<JobStatus> {
    const job = this.#job(id);
    const { state } = job.record;
    if (FINISHED_STATES.includes(state)) throw new ApiError(409, 'FINISHED', `job '${id}' is ${state} already`);
    if (state === 'queued') {
      this.#end(job, { state: 'aborted', error: { code: 'ABORTED', message: 'aborted while queued; nothing was started' } });
      return this.#status(job);
    }
    await job.starting;
    if (!job.running) return this.#status(job);
    const answer = job.running.abort('aborted through the control API');
    if (!answer.accepted) throw new ApiError(409, answer.pastCutover ? 'PAST_CUTOVER' : 'ENDING', answer.reason);
    job.abortRequested = true;
    this.#log.warn({ job: id }, 'aborting: rolling back');
    await job.recorded;
    return this.#status(job);
  }

  setSpeed(id: string, bytesPerSecond: number | null): JobStatus {
    const job = this.#job(id);
    if (FINISHED_STATES.includes(job.record.state)) throw new ApiError(409, 'FINISHED', `job '${id}' is ${job.record.state}`);
    job.record.speedLimitBytesPerSecond = bytesPerSecond;
    job.record.speedSet = true;
    this.#store.save(job.record);
    job.share?.setOwnCap(bytesPerSecond);
    this.#log.info({ job: id, bytesPerSecond }, 'speed set');
    return this.#status(job);
  }

  async setMaxDowntime(id: string, ms: number): Promise<JobStatus> {
    const job = this.#job(id);
    await job.starting;
    if (job.record.role !== 'source') throw new ApiError(409, 'NOT_SOURCE', 'the RAM cut-over budget is the source\'s: set it on the source\'s job');
    if (FINISHED_STATES.includes(job.record.state)) throw new ApiError(409, 'FINISHED', `job '${id}' is ${job.record.state}`);
    if (job.running && !job.running.setMaxDowntime(ms)) {
      throw new ApiError(409, 'PAST_CUTOVER', 'the guest\'s final state has gone to the destination (or a hypervisor runs the pre-copy): there is no budget left to change');
    }
    job.record.maxDowntimeMs = ms;
    this.#store.save(job.record);
    return this.#status(job);
  }

  async remove(id: string): Promise<void> {
    const job = this.#job(id);
    if (!FINISHED_STATES.includes(job.record.state)) throw new ApiError(409, 'NOT_FINISHED', `job '${id}' is ${job.record.state}: abort it first`);
    this.#jobs.delete(id);
    job.hold?.close();
    job.hold = null;
    // Its agent (an export still serving) lets go before its directory goes.
    const running = job.running;
    job.running = null;
    await this.#closeAgent(job.record.id, running);
    this.#store.remove(id);
    this.#log.info({ job: id }, 'job record removed');
  }

  /**
   * The service stops (SIGTERM): every agent is closed and every job's record stays as it is, so the next start
   * runs again what was running (each agent resumes from its state dir). The one exception is what the stop itself
   * settles: a source job before cut-over rolls back when its agent closes (the guest goes on on S, D is told), and
   * is recorded aborted, as a standalone source stopped by SIGTERM before cut-over is.
   */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#timer) clearInterval(this.#timer);
    for (const job of this.#jobs.values()) job.hold?.close();
    await Promise.all([...this.#jobs.values()].map((j) => j.starting));
    await Promise.all(
      [...this.#jobs.values()].map(async (job) => {
        const running = job.running;
        if (!running) return;
        await this.#closeAgent(job.record.id, running);
        // A source's close settles `done` (rolled back, or failed with its state kept): wait for it to be recorded.
        // A dest agent's close settles nothing (its state dir is its record).
        if (job.record.role === 'source') await Promise.race([running.done, new Promise((r) => setTimeout(r, CLOSE_SETTLE_MS).unref())]);
      }),
    );
    this.#store.unlock();
  }

  /** An agent's close, whose failure is logged: one job's trouble never ends the service. */
  async #closeAgent(id: string, running: RunningJob | null): Promise<void> {
    try {
      await running?.close();
    } catch (e) {
      this.#log.error({ job: id, err: errorOf(e) }, 'closing the job\'s agent failed');
    }
  }

  #newJob(record: Omit<JobRecord, 'kind'>): Job {
    return { record, ticketId: null, image: '', optionsCap: null, running: null, share: null, hold: null, rate: new RateMeter(), rateNow: null, starting: null, recorded: null, abortRequested: false };
  }

  /** The next free `job-N`: neither a job nor a directory of one (a crash may leave one without its record). */
  #newId(): string {
    for (let n = this.#jobs.size + 1; ; n++) {
      const id = `job-${n}`;
      if (!this.#jobs.has(id) && !this.#store.exists(id)) return id;
    }
  }

  #job(id: string): Job {
    const job = this.#jobs.get(id);
    if (!job) throw new ApiError(404, 'NO_SUCH_JOB', `no job '${id}'`);
    return job;
  }

  #stateDirOf(id: string): string {
    return join(this.#store.dirOf(id), 'state');
  }

  #optionsOf(record: Omit<JobRecord, 'kind'>) {
    return record.maxDowntimeMs === null ? record.options : { ...record.options, 'max-downtime': String(record.maxDowntimeMs) };
  }

  /** Queued jobs start, oldest first, while their role has a free slot. */
  #admit(role: JobRole): void {
    if (this.#closing || this.#loading) return;
    const jobs = [...this.#jobs.values()].filter((j) => j.record.role === role);
    let running = jobs.filter((j) => j.record.state === 'running').length;
    for (const job of jobs) {
      if (running >= this.#o.maxJobs) return;
      if (job.record.state !== 'queued') continue;
      job.record.state = 'running';
      job.record.startedAt = new Date().toISOString();
      this.#save(job.record);
      running++;
      this.#launch(job);
    }
  }

  #launch(job: Job): void {
    const { record } = job;
    const log = this.#log.child({ job: record.id });
    const stateDir = this.#stateDirOf(record.id);
    job.hold?.close();
    job.hold = null;
    job.share = this.#o.pool.join(this.#ownCap(job));
    const events = new JsonLinesEvents(join(this.#store.dirOf(record.id), 'events.jsonl'), record.role);
    const observer = this.#o.observer;
    log.info({ role: record.role }, 'job starting');
    job.starting = (async () => {
      try {
        job.running = await this.#o.launcher.start(record.role, this.#optionsOf(record), {
          id: record.id,
          jobDir: this.#store.dirOf(record.id),
          stateDir,
          log,
          events,
          bulkRate: job.share!.limit,
          migrationPort: (ticketId) => this.#o.port.listenerFor(ticketId),
          onDemandLatency: (ms) => observer.demandFetch(record.role, ms / 1000),
        });
      } catch (e) {
        events.close();
        // The service stopping under a job being built: its record stays running, the next start builds it again.
        if (!this.#closing) this.#end(job, { state: 'failed', error: errorOf(e) });
        return;
      } finally {
        job.starting = null;
      }
      job.recorded = job.running.done.then((outcome) => {
        events.close();
        const end = job.abortRequested && outcome.state === 'failed' ? { ...outcome, state: 'aborted' as const } : outcome;
        // Stopped with the service: only a rollback is an end (a source before cut-over); anything else resumes.
        if (this.#closing && end.state !== 'aborted') return;
        this.#end(job, end);
      }).catch((e: unknown) => this.#log.error({ job: record.id, err: errorOf(e) }, 'handling the job\'s end failed'));
    })();
  }

  /** The job's own cap: set-speed's once given (null lifts every cap), else its options' --max-bandwidth. */
  #ownCap(job: Job): number | null {
    return job.record.speedSet ? job.record.speedLimitBytesPerSecond : job.optionsCap;
  }

  /** A record written, or the failure logged: one job's disk trouble never ends the service. */
  #save(record: Omit<JobRecord, 'kind'>): void {
    try {
      this.#store.save(record);
    } catch (e) {
      this.#log.error({ job: record.id, state: record.state, err: errorOf(e) }, 'could not write the job\'s record');
    }
  }

  #end(job: Job, outcome: { state: 'completed' | 'failed' | 'aborted'; error: JobRecord['error'] }): void {
    const { record } = job;
    if (FINISHED_STATES.includes(record.state)) return;
    const wasRunning = record.state === 'running';
    if (job.running) record.last = job.running.progress();
    record.state = outcome.state;
    record.error = outcome.error;
    record.endedAt = new Date().toISOString();
    // Known here and shown even if the record cannot be written; a restart would then find the job running again.
    this.#save(record);
    job.hold?.close();
    job.hold = null;
    job.share?.leave();
    job.share = null;
    // An export of the finished image keeps serving until the record is removed; anything else lets go now.
    if (job.running && !hasExport(record.options)) void this.#closeAgent(record.id, job.running);
    // A source that comes for a dest job that ended is told so at once, not "busy" until its connect timeout.
    if (record.role === 'dest' && outcome.state !== 'completed') void this.#refuseTicket(job);
    (outcome.state === 'completed' ? this.#log.info.bind(this.#log) : this.#log.warn.bind(this.#log))({ job: record.id, state: outcome.state, error: outcome.error }, 'job ended');
    if (wasRunning) this.#admit(record.role);
  }

  /** A queued dest job's ticket answers "busy, retry" on the port, so its source waits for it instead of failing. */
  async #holdTicket(job: Job): Promise<void> {
    if (job.record.role !== 'dest' || job.record.state !== 'queued') return;
    const id = job.record.id;
    await this.#answerTicket(job, () => new BusyError('PC_ERR_BUSY', `migration job '${id}' is queued on the destination; retry`), () => job.record.state === 'queued');
  }

  /** A dest job that ended without completing: its source is refused for good, until the record is removed. */
  async #refuseTicket(job: Job): Promise<void> {
    const { id, state } = job.record;
    await this.#answerTicket(job, () => new RolledBackError('PC_ERR_ROLLBACK', `migration job '${id}' on the destination is ${state}: nothing to migrate into`), () => this.#jobs.get(id) === job);
  }

  /** Hold the job's ticket on the port with a refusal, while `stillWanted()` (checked again once registered). */
  async #answerTicket(job: Job, refusal: () => PostcopyError, stillWanted: () => boolean): Promise<void> {
    if (job.ticketId === null) return;
    const listener = this.#o.port.listenerFor(job.ticketId)({ listen: { host: '', port: 0 }, log: this.#log, events: nullEvents }, (socket, _peer, settled) => {
      refuseConnection(socket, refusal());
      settled();
    });
    try {
      await listener.listen();
    } catch (e) {
      this.#log.warn({ job: job.record.id, err: errorOf(e) }, 'could not hold the job\'s ticket on the migration port');
      return;
    }
    // Admitted (or removed) meanwhile: the agent registers the ticket itself now.
    if (!stillWanted() || this.#closing) {
      listener.close();
      return;
    }
    job.hold = listener;
  }

  #sample(): void {
    const now = performance.now();
    for (const job of this.#jobs.values()) if (job.running && job.record.state === 'running') job.rateNow = Math.round(job.rate.sample(now, job.running.progress().dataProcessedBytes));
  }

  #status(job: Job): JobStatus {
    const { record } = job;
    const live = record.state === 'running' && job.running !== null;
    return statusOf(record, live ? job.running!.progress() : record.last, {
      rateBytesPerSecond: live ? job.rateNow : null,
      ownCap: this.#ownCap(job),
      effectiveCap: job.share ? job.share.effective : null,
    });
  }
}

function hasExport(options: Record<string, string | boolean>): boolean {
  return options['nbd-listen'] !== undefined || options['nbd-socket'] !== undefined;
}

function errorOf(e: unknown): { code: string; message: string } {
  return { code: isPostcopyError(e) ? e.code : 'PC_ERR_INTERNAL', message: e instanceof Error ? e.message : String(e) };
}
