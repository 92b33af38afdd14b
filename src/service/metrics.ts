// The service's Prometheus metrics (prom-client, a registry of its own): job counts and per-job figures read from
// the job statuses at each scrape, the demand-fetch latency histogram fed as fetches happen, host-wide counters
// that never fall, and the process's own RSS and event-loop delay.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ShownPhase } from '../dest/dest-core-types.js';
import type { SourcePhase } from '../source/source-core-types.js';
import { JOB_ROLES, JOB_STATES, type JobRole, type JobStatus, type ServiceObserver } from './job-types.js';
import { MonotonicSums, type JobFigure } from './metrics-totals.js';

/** Every metric's name, for the README table and for tests and dashboards that query them. */
export const METRIC = {
  jobs: 'postcopy_jobs',
  dataTotal: 'postcopy_job_data_total_bytes',
  dataProcessed: 'postcopy_job_data_processed_bytes',
  dataRemaining: 'postcopy_job_data_remaining_bytes',
  onlyOnSource: 'postcopy_job_only_on_source_bytes',
  demandFetch: 'postcopy_demand_fetch_latency_seconds',
  reconnects: 'postcopy_link_reconnects_total',
  blockData: 'postcopy_block_data_bytes_total',
} as const;

/**
 * The demand-fetch histogram's upper bounds: 16 µs × 2^k for k = 0…18, i.e. 16 µs up to 4.194304 s (+Inf above).
 * Decimal 16 µs rather than 2^-16 s keeps the `le` labels readable (0.000016, 0.000032, … 4.194304); doubling a
 * double is exact, so each bound prints as its decimal. A loopback fetch sits in the first few buckets, a fetch
 * waiting out a reconnect in the last ones.
 */
export const DEMAND_FETCH_BUCKETS: readonly number[] = Array.from({ length: 19 }, (_, k) => 16e-6 * 2 ** k);

export const BLOCK_CLASSES = ['urgent', 'bulk'] as const;
export type BlockClassName = (typeof BLOCK_CLASSES)[number];

// The agents' phases, complete by construction (a phase added to either union fails to compile until named here),
// so postcopy_jobs has a zero series for each from the first scrape.
const SOURCE_PHASES: Record<SourcePhase, true> = {
  connecting: true, begin: true, perform: true, 'awaiting-finish': true, postcopy: true, confirmed: true, 'rolled-back': true,
};
const DEST_PHASES: Record<ShownPhase, true> = {
  idle: true, prepared: true, 'receiving-ram': true, finishing: true, postcopy: true, complete: true, confirmed: true, aborted: true,
};
const KNOWN_PHASES: Record<JobRole, readonly string[]> = {
  source: [...JOB_STATES, ...Object.keys(SOURCE_PHASES)],
  dest: [...JOB_STATES, ...Object.keys(DEST_PHASES)],
};

type PerJobField = 'dataTotalBytes' | 'dataProcessedBytes' | 'dataRemainingBytes' | 'bytesOnlyOnSource';

export class ServiceMetrics implements ServiceObserver {
  readonly registry = new Registry();
  readonly #jobs: () => JobStatus[];
  readonly #demandFetch: Histogram<'role'>;
  /** Every phase a role has shown: its series stays (at zero) once no job is in it, so dashboards see no gaps. */
  readonly #phases = new Map<JobRole, Set<string>>(JOB_ROLES.map((r) => [r, new Set(KNOWN_PHASES[r])]));
  readonly #reconnects = new MonotonicSums<JobRole>();
  readonly #blockData = new MonotonicSums<`${JobRole}/${BlockClassName}`>();
  /** The statuses of the scrape under way (see #snapshot). */
  #current: JobStatus[] | null = null;

  constructor(jobs: () => JobStatus[]) {
    this.#jobs = jobs;
    const registers = [this.registry];

    const jobCounts: Gauge<'role' | 'phase'> = new Gauge({
      name: METRIC.jobs,
      help: "Jobs by role and phase (the agent's phase while running; queued, completed, failed or aborted otherwise)",
      labelNames: ['role', 'phase'],
      registers,
      collect: () => this.#countJobs(jobCounts),
    });
    this.#perJobGauge(METRIC.dataTotal, 'Bytes of the disk the job moves', 'dataTotalBytes');
    this.#perJobGauge(METRIC.dataProcessed, 'Bytes of the disk already at D (pulled, or written there by the guest)', 'dataProcessedBytes');
    this.#perJobGauge(METRIC.dataRemaining, 'Bytes of the disk still to move to D', 'dataRemainingBytes');
    this.#perJobGauge(METRIC.onlyOnSource, 'Bytes that exist only on S (after cut-over: what losing S would lose)', 'bytesOnlyOnSource');

    this.#demandFetch = new Histogram({
      name: METRIC.demandFetch,
      help: "Time from a guest's access finding a block missing on D to the block being present",
      labelNames: ['role'],
      buckets: [...DEMAND_FETCH_BUCKETS],
      registers,
    });
    for (const role of JOB_ROLES) this.#demandFetch.zero({ role });

    const reconnects: Counter<'role'> = new Counter({
      name: METRIC.reconnects,
      help: 'Migration links re-established after a loss, over every job this service has run',
      labelNames: ['role'],
      registers,
      collect: () => {
        const growth = this.#reconnects.sweep(this.#snapshot().map((j) => ({ job: identity(j), series: j.role, value: j.reconnects })));
        for (const role of JOB_ROLES) reconnects.inc({ role }, growth.get(role) ?? 0);
      },
    });
    const blockData: Counter<'role' | 'class'> = new Counter({
      name: METRIC.blockData,
      help: 'Block data bytes moved, by class: urgent (demand reads) and bulk (the background stream), over every job this service has run',
      labelNames: ['role', 'class'],
      registers,
      collect: () => {
        const figures = this.#snapshot().flatMap((j): JobFigure<`${JobRole}/${BlockClassName}`>[] =>
          BLOCK_CLASSES.map((c) => ({ job: identity(j), series: `${j.role}/${c}`, value: j.bytesByClass[c] })),
        );
        const growth = this.#blockData.sweep(figures);
        for (const role of JOB_ROLES) for (const c of BLOCK_CLASSES) blockData.inc({ role, class: c }, growth.get(`${role}/${c}`) ?? 0);
      },
    });

    // process_resident_memory_bytes, nodejs_eventloop_lag_*_seconds, heap, GC, handles: the names every Node.js
    // dashboard already knows, unprefixed.
    collectDefaultMetrics({ register: this.registry });
  }

  demandFetch(role: JobRole, seconds: number): void {
    if (Number.isFinite(seconds) && seconds >= 0) this.#demandFetch.observe({ role }, seconds);
  }

  /** The Prometheus text exposition (content type: `registry.contentType`). */
  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  #perJobGauge(name: string, help: string, field: PerJobField): void {
    const gauge: Gauge<'job_id' | 'role'> = new Gauge({
      name,
      help,
      labelNames: ['job_id', 'role'],
      registers: [this.registry],
      collect: () => {
        // Rebuilt each scrape: a removed job's series go (Prometheus marks them stale at once).
        gauge.reset();
        for (const j of this.#snapshot()) gauge.set({ job_id: j.id, role: j.role }, j[field]);
      },
    });
  }

  #countJobs(gauge: Gauge<'role' | 'phase'>): void {
    const counts = new Map<string, number>();
    for (const j of this.#snapshot()) {
      this.#phases.get(j.role)?.add(j.phase);
      const key = `${j.role}\u0000${j.phase}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    for (const [role, phases] of this.#phases) {
      for (const phase of phases) gauge.set({ role, phase }, counts.get(`${role}\u0000${phase}`) ?? 0);
    }
  }

  /**
   * The job statuses, read once per scrape: prom-client calls every metric's collect in one synchronous pass, so
   * the list is kept until the next microtask and all metrics of a scrape agree (total = processed + remaining).
   */
  #snapshot(): JobStatus[] {
    if (!this.#current) {
      this.#current = this.#jobs();
      queueMicrotask(() => {
        this.#current = null;
      });
    }
    return this.#current;
  }
}

function identity(j: JobStatus): string {
  return `${j.id}\u0000${j.createdAt}`;
}
