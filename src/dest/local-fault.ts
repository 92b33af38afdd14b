// D's own disk failing under the image (full, over quota, EIO): a local fault, never the peer's. While one
// lasts D stores nothing fetched, says so once and then at a bounded rate, and probes with backoff until the
// disk takes writes again. Which errors count, the backoff and the report rate live here; the block store acts.
import { BackendError, systemErrorCode, type PostcopyError } from '../common/errors.js';
import { backoffDelay, NO_JITTER } from '../common/retry.js';
import { FAULT_FLIP_EVERY_MS, FAULT_REPORT_EVERY_MS, FAULT_RETRY_MAX_MS, FAULT_RETRY_MIN_MS } from './store-constants.js';

export type LocalFaultKind = 'disk-full' | 'image-io-error';

/** What D tells the operator (log + event) when a fault starts, persists, or clears. */
export interface LocalFaultReport {
  kind: LocalFaultKind;
  /** The system error code (ENOSPC, EDQUOT, EIO, ...). */
  code: string;
  /** true: the fault is on (first report or a reminder); false: it cleared and fetching resumed. */
  active: boolean;
  message: string;
}

export interface LocalFaultTiming {
  /** First retry after this long; doubled on each failed probe up to retryMaxMs. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** While a fault lasts it is reported again at most this often. */
  reportEveryMs?: number;
  /** Its start and end are said at most this often (a disk that fills and frees over and over stays quiet). */
  flipEveryMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);

function faultKind(code: string): LocalFaultKind {
  return DISK_FULL_CODES.has(code) ? 'disk-full' : 'image-io-error';
}

/** The error a request gets while a fault holds it back; errnoOf maps it to ENOSPC or EIO through its cause. */
function localFaultError(cause: unknown): PostcopyError {
  const code = systemErrorCode(cause) ?? 'EIO';
  const detail = cause instanceof Error ? cause.message : code;
  return new BackendError(faultKind(code) === 'disk-full' ? 'PC_ERR_DISK_FULL' : 'PC_ERR_BACKEND', detail, { cause });
}

/**
 * On/off state of a local fault with its retry timer and report pacing. `fail` turns it on (or keeps it on);
 * after a backoff `probe` is run: resolving turns the fault off, rejecting doubles the backoff. It is said to be
 * over only once real data has been stored again (`succeeded`): a probe can pass on a disk that is still full
 * (ext4 gives back a little space after each sync), and flapping must stay quiet and cheap.
 */
export class LocalFaultGate {
  readonly #probe: () => Promise<void>;
  readonly #report: (r: LocalFaultReport) => void;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #reportEveryMs: number;
  readonly #flipEveryMs: number;
  readonly #now: () => number;
  #fault: { code: string; cause: unknown } | null = null;
  /** The code of the latest fault (for the report that it is over). */
  #lastCode = 'EIO';
  /** Failed probes (or faults back without progress) since the last clear: the retry delay doubles with each. */
  #attempt = 0;
  #timer: NodeJS.Timeout | null = null;
  #probing = false;
  /** Data was stored since the fault last cleared; when it was not, a fault that comes back waits longer. */
  #progressSinceClear = true;
  #lastReportAt = -Infinity;
  /** What the operator was last told: the fault is on (true) or over (false). */
  #saidOn = false;
  #closed = false;
  /** Called once the fault has cleared (the streamer tops its window up again). */
  onClear: () => void = () => {};

  constructor(probe: () => Promise<void>, report: (r: LocalFaultReport) => void, timing: LocalFaultTiming = {}) {
    this.#probe = probe;
    this.#report = report;
    this.#retryMinMs = timing.retryMinMs ?? FAULT_RETRY_MIN_MS;
    this.#retryMaxMs = timing.retryMaxMs ?? FAULT_RETRY_MAX_MS;
    this.#reportEveryMs = timing.reportEveryMs ?? FAULT_REPORT_EVERY_MS;
    this.#flipEveryMs = timing.flipEveryMs ?? FAULT_FLIP_EVERY_MS;
    this.#now = timing.now ?? (() => performance.now());
  }

  get active(): boolean {
    return this.#fault !== null;
  }

  /** The error for a request refused while the fault lasts. */
  get error(): PostcopyError {
    return localFaultError(this.#fault?.cause);
  }

  /** A local write or sync failed with `cause`. Returns false (and does nothing) when it is not a system error. */
  fail(cause: unknown): boolean {
    const code = systemErrorCode(cause);
    if (code === null || this.#closed) return false;
    if (this.#fault === null && !this.#progressSinceClear) this.#attempt++;
    this.#fault = { code, cause };
    this.#lastCode = code;
    this.#sayIfDue();
    if (this.#timer === null && !this.#probing) this.#schedule();
    return true;
  }

  /** Data was stored: the disk takes writes, so the next fault starts from the shortest wait. */
  succeeded(): void {
    if (this.#fault !== null) return;
    this.#progressSinceClear = true;
    this.#attempt = 0;
    if (this.#saidOn) this.#sayIfDue();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(): void {
    const delay = backoffDelay(this.#attempt, { initialMs: this.#retryMinMs, maxMs: this.#retryMaxMs }, NO_JITTER);
    this.#timer = setTimeout(() => void this.#retry(), delay);
    this.#timer.unref();
  }

  async #retry(): Promise<void> {
    this.#timer = null;
    this.#probing = true;
    try {
      await this.#probe();
    } catch (e) {
      this.#probing = false;
      if (this.#closed) return;
      this.#attempt++;
      // Not a system error (a bug in the probe): keep the fault as it was and try again later all the same.
      if (!this.fail(e) && this.#timer === null) this.#schedule();
      return;
    }
    this.#probing = false;
    if (this.#closed || this.#fault === null) return;
    this.#fault = null;
    this.#progressSinceClear = false;
    this.onClear();
  }

  /**
   * Say the state when it differs from what was last said (at most once per flipEveryMs, the first time at
   * once), and remind of a lasting fault once per reportEveryMs. A change not said yet is said on a later call.
   */
  #sayIfDue(): void {
    const on = this.#fault !== null;
    const since = this.#now() - this.#lastReportAt;
    if (on === this.#saidOn ? !on || since < this.#reportEveryMs : since < this.#flipEveryMs) return;
    this.#lastReportAt = this.#now();
    this.#saidOn = on;
    const code = this.#lastCode;
    const message = on ? (this.#fault!.cause as Error).message : 'the image takes writes again; fetching resumed';
    this.#report({ kind: faultKind(code), code, active: on, message });
  }
}
