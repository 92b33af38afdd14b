// The shape of one bench run's JSON (bench/results/latest.json), shared by the runner and the report writer.
import type { MicroRow } from '../micro.js';
import type { BulkResult } from '../macro/bulk.js';
import type { DowntimeCell } from '../macro/downtime.js';
import type { DemoResult } from '../macro/demo.js';
import type { LatencyResult } from '../macro/latency.js';
import type { RssPoint, SparseResult } from '../macro/sparse.js';
import type { WanResult } from '../macro/wan.js';

/** One of the targets as evaluated by targets.ts: met, not met, or null when its tier did not run. */
export interface TargetCheck {
  id: string;
  target: string;
  measured: string;
  /** The same-run baseline the figure is judged against ("—" when the limit is absolute). */
  baseline?: string;
  met: boolean | null;
}

export interface MachineFacts {
  date: string;
  command: string;
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  os: string;
  tools: Record<string, string>;
  workDir: string;
  workDirFs: string;
  gitCommit: string;
  gitDirtyFiles: number;
  loadAvgStart: number[];
  loadAvgEnd: number[];
  durationSec: number;
  options: Record<string, unknown>;
}

export interface BenchResults {
  version: 1;
  machine: MachineFacts;
  micro?: MicroRow[];
  bulk?: BulkResult;
  sparse?: SparseResult;
  latency?: LatencyResult;
  demo?: DemoResult;
  downtime?: DowntimeCell[];
  rss?: RssPoint[];
  wan?: WanResult;
  targets: TargetCheck[];
  errors: string[];
}
