// The service's jobs on disk: DIR/jobs/ID/job.json (0600, written whole and fsync'd) beside the job's state dir and
// events. A restart reads them back: what ran runs again from its state dir, what was queued queues again.
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../common/errors.js';
import { ensureDir, readStateFile, writeStateFile } from '../common/state-file.js';
import type { JobProgress } from './job-launcher.js';
import type { JobError, JobOptions, JobRole, JobState } from './job-types.js';

const RECORD_KIND = 'postcopy-job/1';
const RECORD_FILE = 'job.json';
/** Job ids a fleet manager can choose: lower-case, digits and dashes (they name directories and metric labels). */
export const JOB_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface JobRecord {
  kind: typeof RECORD_KIND;
  id: string;
  role: JobRole;
  options: JobOptions;
  state: JobState;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  error: JobError | null;
  /** set-speed, kept across restarts. */
  speedLimitBytesPerSecond: number | null;
  /** max-downtime set through the API (S), kept across restarts; null: the options' (or the default). */
  maxDowntimeMs: number | null;
  /** The figures when it ended, so a finished job still reports them after a restart. */
  last: JobProgress | null;
}

export class JobStore {
  readonly #jobsDir: string;

  constructor(root: string) {
    ensureDir(root);
    this.#jobsDir = join(root, 'jobs');
    ensureDir(this.#jobsDir);
  }

  dirOf(id: string): string {
    return join(this.#jobsDir, id);
  }

  /** Every job found, oldest first; a directory without a readable record is skipped with its reason. */
  load(onSkip: (dir: string, why: string) => void): JobRecord[] {
    const records: JobRecord[] = [];
    for (const name of readdirSync(this.#jobsDir)) {
      const dir = this.dirOf(name);
      try {
        if (!JOB_ID_PATTERN.test(name) || !lstatSync(dir).isDirectory()) throw new UsageError('PC_ERR_STATE_DIR', 'not a job directory');
        const r = readStateFile<JobRecord>(join(dir, RECORD_FILE));
        if (!r || r.kind !== RECORD_KIND || r.id !== name) throw new UsageError('PC_ERR_STATE_DIR', `no ${RECORD_FILE} of this service`);
        records.push(r);
      } catch (e) {
        onSkip(dir, (e as Error).message);
      }
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** A new job's directory; false when the id is taken (by a record or anything else at that path). */
  create(record: Omit<JobRecord, 'kind'>): boolean {
    const dir = this.dirOf(record.id);
    if (lstatSync(dir, { throwIfNoEntry: false })) return false;
    if (!ensureDir(dir)) return false;
    this.save(record);
    return true;
  }

  save(record: Omit<JobRecord, 'kind'>): void {
    writeStateFile(join(this.dirOf(record.id), RECORD_FILE), { kind: RECORD_KIND, ...record });
  }

  /** The job's directory and all in it: the service made every file there (the images live elsewhere). */
  remove(id: string): void {
    rmSync(this.dirOf(id), { recursive: true, force: true });
  }
}
