// The service's jobs on disk: DIR/jobs/ID/job.json (0600, written whole and fsync'd) beside the job's state dir and
// events. A restart reads them back: what ran runs again from its state dir, what was queued queues again.
import { closeSync, constants, lstatSync, readdirSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../common/errors.js';
import { ensureDir, openPrivate, readStateFile, writeStateFile } from '../common/state-file.js';
import type { JobProgress } from './job-launcher.js';
import type { JobError, JobOptions, JobRole, JobState } from './job-types.js';

const RECORD_KIND = 'postcopy-job/1';
const RECORD_FILE = 'job.json';
/** Who runs the jobs of this root: two services on one root would run every job twice, into the same images. */
const LOCK_FILE = 'service.lock';
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
  /** set-speed, kept across restarts (null: uncapped). Only once `speedSet`: before, the options' cap holds. */
  speedLimitBytesPerSecond: number | null;
  speedSet?: boolean;
  /** max-downtime set through the API (S), kept across restarts; null: the options' (or the default). */
  maxDowntimeMs: number | null;
  /** The figures when it ended, so a finished job still reports them after a restart. */
  last: JobProgress | null;
}

export class JobStore {
  readonly #root: string;
  readonly #jobsDir: string;
  #locked = false;

  constructor(root: string) {
    ensureDir(root);
    this.#root = root;
    this.#jobsDir = join(root, 'jobs');
    ensureDir(this.#jobsDir);
  }

  /**
   * Take the root for this process: a lock file naming our pid, made with O_EXCL. One left by a process that is
   * gone (a SIGKILL) is replaced; one of a live process refuses the start.
   */
  lock(): void {
    if (this.#locked) return;
    const path = join(this.#root, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openPrivate(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.#locked = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new UsageError('PC_ERR_USAGE', `--root ${this.#root} is in use by another postcopy serve (pid ${holder}); give each service its own root`);
      }
      unlinkSync(path);
    }
    throw new UsageError('PC_ERR_USAGE', `--root ${this.#root}: could not take ${LOCK_FILE}`);
  }

  unlock(): void {
    if (!this.#locked) return;
    this.#locked = false;
    rmSync(join(this.#root, LOCK_FILE), { force: true });
  }

  /** Anything at the job's path (a record, or a directory a crash left without one). */
  exists(id: string): boolean {
    return lstatSync(this.dirOf(id), { throwIfNoEntry: false }) !== undefined;
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

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, as another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
