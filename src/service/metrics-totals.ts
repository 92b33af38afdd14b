// Host-wide counters built from per-job figures that may vanish (a removed record) or start again from zero (a job
// restarted): each job's last-seen figure is kept and only its growth is added, so a sum never falls.

export interface JobFigure<L extends string> {
  /** The job's identity: id and creation time, so a new job reusing a removed job's id counts from zero. */
  job: string;
  /** The series the figure adds to (e.g. role and class). */
  series: L;
  value: number;
}

export class MonotonicSums<L extends string> {
  /** Last figure seen per job and series, from the previous sweep only: a job missing from a sweep is forgotten. */
  #last = new Map<string, number>();

  /**
   * One sweep over every live job's current figures: the growth per series since the previous sweep. A figure
   * below the last one seen is a restart (counted from zero, as Prometheus treats a counter reset).
   */
  sweep(figures: Iterable<JobFigure<L>>): Map<L, number> {
    const growth = new Map<L, number>();
    const next = new Map<string, number>();
    for (const { job, series, value } of figures) {
      const figure = Number.isFinite(value) && value > 0 ? value : 0;
      const key = `${job}\u0000${series}`;
      const last = this.#last.get(key) ?? 0;
      growth.set(series, (growth.get(series) ?? 0) + (figure >= last ? figure - last : figure));
      next.set(key, figure);
    }
    this.#last = next;
    return growth;
  }
}
