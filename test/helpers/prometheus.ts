// A real Prometheus server (Debian's /usr/bin/prometheus) for tests: started on loopback on a free port with a
// temporary config (one static target, scraped every second) and TSDB, ready once its target is up; queried
// through its HTTP API. Missing: the test skips, except under CI=true where it fails.
//
//   const prom = await startPrometheus({ host: '127.0.0.1', port: metricsPort });
//   const before = apiFigure();                 // e.g. GET /v1/jobs/ID → dataProcessedBytes
//   await prom.waitForScrape();                 // a whole scrape began after `before` and is queryable
//   const seen = await prom.value('postcopy_job_data_processed_bytes{job_id="ID"}');
//   const after = apiFigure();                  // before ≤ seen ≤ after: the figure served at that scrape
//   await prom.close();
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/common/free-port.js';
import { IN_CI, toolPath } from '../nbd/helpers/tools.js';

export const PROMETHEUS = 'prometheus';

/** For describe.skipIf / it.skipIf: true only outside CI when prometheus is missing (under CI the test fails). */
export function skipWithoutPrometheus(): boolean {
  return !IN_CI && toolPath(PROMETHEUS) === undefined;
}

export interface ScrapeTarget {
  host: string;
  port: number;
  /** Scrape over https with a client certificate (PEM file paths); the server's certificate must name `host`. */
  tls?: { caFile: string; certFile: string; keyFile: string };
}

export interface PrometheusOptions {
  /** Default 1 s (the timeout follows it). */
  scrapeIntervalSeconds?: number;
  /** How long to wait for the server to be ready and the target up (default 30 s). */
  startTimeoutMs?: number;
}

/** One series of an instant vector: its labels, the query's evaluation time (s since the epoch) and value. */
export interface PromSample {
  metric: Record<string, string>;
  timestamp: number;
  value: number;
}

/** A series' raw samples as stored, each stamped with the start of the scrape that took it (s since the epoch). */
export interface PromSeries {
  metric: Record<string, string>;
  samples: { timestamp: number; value: number }[];
}

export interface RunningPrometheus {
  /** http://127.0.0.1:PORT */
  url: string;
  /** An instant query (at `time`, s since the epoch; default now): every series of the resulting vector. */
  query(expr: string, time?: number): Promise<PromSample[]>;
  /** The value of a query expected to yield at most one series; null when it yields none. */
  value(expr: string): Promise<number | null>;
  /** The raw samples of `selector` over the last `windowSeconds` (default 10), scrape timestamps included. */
  raw(selector: string, windowSeconds?: number): Promise<PromSeries[]>;
  /** Resolves once a scrape that started after this call has been stored (its samples answer queries). */
  waitForScrape(timeoutMs?: number): Promise<void>;
  /** The target as Prometheus sees it (health, lastError, lastScrape). */
  target(): Promise<TargetState>;
  /** Prometheus's own log (stderr), for failure messages. */
  log(): string;
  /** Stops the server (SIGTERM, SIGKILL after 10 s), waits for it to exit, removes its config and TSDB. */
  close(): Promise<void>;
}

export interface TargetState {
  health: 'up' | 'down' | 'unknown';
  lastError: string;
  lastScrape: string;
  scrapeUrl: string;
}

const SCRAPE_JOB = 'postcopy';
const LOG_KEEP_CHARS = 50_000;
const SCRAPE_STAMP_SLACK_MS = 10;

export async function startPrometheus(target: ScrapeTarget, opts: PrometheusOptions = {}): Promise<RunningPrometheus> {
  const binary = toolPath(PROMETHEUS);
  if (!binary) throw new Error('prometheus missing (apt-get install prometheus)');
  const dir = await mkdtemp(join(tmpdir(), 'pc-prometheus-'));
  try {
    const config = join(dir, 'prometheus.yml');
    await writeFile(config, configText(target, opts.scrapeIntervalSeconds ?? 1));
    // freePort hands out a port another process may take before Prometheus binds it: try again a few times.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const server = spawnPrometheus(binary, config, join(dir, 'tsdb'), port);
      try {
        return await ready(server, dir, port, opts.startTimeoutMs ?? 30_000);
      } catch (e) {
        await server.stop();
        if (attempt >= 3 || !/address already in use/.test(server.log())) throw e;
      }
    }
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

function configText(target: ScrapeTarget, intervalS: number): string {
  const address = target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
  const tls = target.tls
    ? `    scheme: https
    tls_config:
      ca_file: ${JSON.stringify(target.tls.caFile)}
      cert_file: ${JSON.stringify(target.tls.certFile)}
      key_file: ${JSON.stringify(target.tls.keyFile)}
`
    : '';
  return `global:
  scrape_interval: ${intervalS}s
  scrape_timeout: ${intervalS}s
scrape_configs:
  - job_name: ${SCRAPE_JOB}
    metrics_path: /metrics
${tls}    static_configs:
      - targets: [${JSON.stringify(address)}]
`;
}

interface SpawnedPrometheus {
  child: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

function spawnPrometheus(binary: string, config: string, tsdb: string, port: number): SpawnedPrometheus {
  const child = spawn(
    binary,
    [`--config.file=${config}`, `--storage.tsdb.path=${tsdb}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=info'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    log += d;
    if (log.length > 2 * LOG_KEEP_CHARS) log = log.slice(-LOG_KEEP_CHARS);
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  child.once('error', (err) => (log += `\nspawn failed: ${err.message}`));
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function ready(server: SpawnedPrometheus, dir: string, port: number, timeoutMs: number): Promise<RunningPrometheus> {
  const url = `http://127.0.0.1:${port}`;
  const alive = () => server.child.exitCode === null && server.child.signalCode === null;
  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params).toString(),
    });
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path} ${JSON.stringify(params)}: ${body.error ?? res.status}`);
    return body.data;
  };
  const target = async (): Promise<TargetState> => {
    const res = await fetch(`${url}/api/v1/targets?state=active`);
    const body = (await res.json()) as { data: { activeTargets: TargetState[] } };
    const t = body.data.activeTargets[0];
    return t ?? { health: 'unknown', lastError: 'no active target yet', lastScrape: '', scrapeUrl: '' };
  };
  type Point = [number, string];
  type Answer = { resultType: string; result: { metric: Record<string, string>; value?: Point; values?: Point[] }[] };
  const query = async (expr: string, time?: number): Promise<PromSample[]> => {
    const params: Record<string, string> = { query: expr };
    if (time !== undefined) params.time = String(time);
    const data = await api<Answer>('/api/v1/query', params);
    if (data.resultType !== 'vector') throw new Error(`prometheus: ${expr} is a ${data.resultType}, not an instant vector`);
    return data.result.map((r) => ({ metric: r.metric, timestamp: r.value![0], value: Number(r.value![1]) }));
  };
  const raw = async (selector: string, windowSeconds = 10): Promise<PromSeries[]> => {
    // A range selector in an instant query answers with the stored samples themselves, timestamps and all.
    const data = await api<Answer>('/api/v1/query', { query: `${selector}[${windowSeconds}s]` });
    if (data.resultType !== 'matrix') throw new Error(`prometheus: ${selector} is not a series selector`);
    return data.result.map((r) => ({ metric: r.metric, samples: r.values!.map(([t, v]) => ({ timestamp: t, value: Number(v) })) }));
  };

  // Ready, then the target up: a first scrape succeeded (its error, if any, in the failure message).
  const deadline = Date.now() + timeoutMs;
  let last = 'not started';
  for (;;) {
    if (!alive()) throw new Error(`prometheus exited (${server.child.exitCode ?? server.child.signalCode}): ${server.log().slice(-2000)}`);
    try {
      const res = await fetch(`${url}/-/ready`);
      if (res.ok) {
        const t = await target();
        if (t.health === 'up') break;
        last = `target ${t.scrapeUrl} ${t.health}: ${t.lastError}`;
      } else last = `/-/ready answered ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`prometheus not scraping within ${timeoutMs} ms (${last}): ${server.log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    query,
    raw,
    value: async (expr) => {
      const r = await query(expr);
      if (r.length > 1) throw new Error(`prometheus: ${expr} yields ${r.length} series, expected at most one`);
      return r[0]?.value ?? null;
    },
    waitForScrape: async (waitMs = 10_000) => {
      // `up` is stored with the scrape's other samples, stamped with the scrape's start, which Prometheus may move
      // by up to 2 ms to align with the interval: a stamp 10 ms past this call is a scrape begun after it.
      const since = (Date.now() + SCRAPE_STAMP_SLACK_MS) / 1000;
      const until = Date.now() + waitMs;
      for (;;) {
        const [up] = await query(`timestamp(up{job="${SCRAPE_JOB}"})`);
        if (up && up.value > since) return;
        if (!alive()) throw new Error(`prometheus exited: ${server.log().slice(-2000)}`);
        if (Date.now() > until) throw new Error(`no scrape stored within ${waitMs} ms (target: ${JSON.stringify(await target())})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    target,
    log: server.log,
    close: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
