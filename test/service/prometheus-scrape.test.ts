// A real Prometheus scrapes a real metrics server fed by a job list that changes while it runs: what its query API
// answers is what was served at a scrape (figures, a removed job's series gone, counters kept past a removal, the
// histogram's buckets), over plain HTTP on loopback and over mutual TLS.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import type { JobStatus } from '../../src/service/job-types.js';
import { METRIC, ServiceMetrics } from '../../src/service/metrics.js';
import { startMetricsServer, type MetricsServer } from '../../src/service/metrics-server.js';
import { skipWithoutPrometheus, startPrometheus, type RunningPrometheus } from '../helpers/prometheus.js';
import { jobStatus, makeTestPki } from './metrics-fixtures.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serveAndScrape(metrics: ServiceMetrics, tls?: { dir: string }): Promise<{ server: MetricsServer; prom: RunningPrometheus }> {
  const pki = tls ? makeTestPki(tls.dir) : null;
  const read = (n: string) => readFileSync(pki!.file(n));
  const server = await startMetricsServer({
    listen: { host: tls ? '0.0.0.0' : '127.0.0.1', port: 0 },
    ...(pki ? { tls: { cert: read('server.crt'), key: read('server.key'), ca: read('ca.crt') } } : {}),
    metrics,
    log: silentLogger(),
  });
  cleanups.push(() => server.close());
  const prom = await startPrometheus({
    host: '127.0.0.1',
    port: server.address.port,
    ...(pki ? { tls: { caFile: pki.file('ca.crt'), certFile: pki.file('client.crt'), keyFile: pki.file('client.key') } } : {}),
  });
  cleanups.push(() => prom.close());
  return { server, prom };
}

describe.skipIf(skipWithoutPrometheus())('a real Prometheus scraping the metrics server', () => {
  it('reads back, through its query API, the figures served at a scrape while they change', async () => {
    // j1 moves on its own clock, independent of scrapes (as a running job does); j2 is removed half-way.
    let processed = 0;
    let jobs: JobStatus[] = [];
    const j1 = () => jobStatus({ id: 'j1', dataTotalBytes: 1 << 30, dataProcessedBytes: processed, dataRemainingBytes: (1 << 30) - processed, bytesByClass: { urgent: 0, bulk: processed } });
    const j2 = jobStatus({ id: 'j2', role: 'source', state: 'completed', phase: 'completed', dataTotalBytes: 4096, dataProcessedBytes: 4096, bytesByClass: { urgent: 512, bulk: 3584 } });
    jobs = [j1(), j2];
    const tick = setInterval(() => {
      processed += 65536;
      jobs = jobs.map((j) => (j.id === 'j1' ? j1() : j));
    }, 37);
    cleanups.push(() => clearInterval(tick));
    // What each scrape was served, in order (one read of the list per scrape).
    const served: { atMs: number; processed: number }[] = [];
    const metrics = new ServiceMetrics(() => {
      const p = jobs.find((j) => j.id === 'j1')?.dataProcessedBytes ?? -1;
      served.push({ atMs: Date.now(), processed: p });
      return jobs;
    });
    metrics.demandFetch('dest', 20e-6);
    metrics.demandFetch('dest', 0.003);
    const { prom } = await serveAndScrape(metrics);
    expect((await prom.target()).health).toBe('up');

    // The lead's pattern: the API's figure before and after a whole scrape brackets what Prometheus holds.
    for (let round = 0; round < 3; round++) {
      const before = processed;
      await prom.waitForScrape();
      const [sample] = await prom.query(`${METRIC.dataProcessed}{job_id="j1"}`);
      const after = processed;
      expect(sample).toBeDefined();
      expect(sample!.metric).toMatchObject({ job_id: 'j1', role: 'dest', job: 'postcopy' });
      expect(sample!.value).toBeGreaterThanOrEqual(before);
      expect(sample!.value).toBeLessThanOrEqual(after);
      // Each stored sample is exactly what was served to the scrape it is stamped with: the first list read after
      // that scrape's start (stamps may be moved 2 ms to align with the interval; the next read is a second later).
      const [series] = await prom.raw(`${METRIC.dataProcessed}{job_id="j1"}`);
      expect(series!.samples.length).toBeGreaterThan(0);
      for (const stored of series!.samples) {
        const atScrape = served.find((s) => s.atMs >= stored.timestamp * 1000 - 100);
        expect(stored.value).toBe(atScrape?.processed);
      }
    }
    expect(await prom.value(`${METRIC.dataTotal}{job_id="j1"}`)).toBe(1 << 30);
    expect(await prom.value(`${METRIC.onlyOnSource}{job_id="j2"}`)).toBe(0);
    expect(await prom.value(`${METRIC.jobs}{role="source",phase="completed"}`)).toBe(1);
    expect(await prom.value(`${METRIC.jobs}{role="source",phase="queued"}`)).toBe(0);
    expect(await prom.value(`${METRIC.demandFetch}_bucket{role="dest",le="0.000032"}`)).toBe(1);
    expect(await prom.value(`${METRIC.demandFetch}_count{role="dest"}`)).toBe(2);
    expect(await prom.value('process_resident_memory_bytes')).toBeGreaterThan(1 << 20);
    expect(await prom.value('nodejs_eventloop_lag_p99_seconds')).not.toBeNull();

    // j2's record removed, j1 frozen: its series go stale at the next scrape, the counters keep its bytes.
    clearInterval(tick);
    jobs = [j1()];
    await prom.waitForScrape();
    expect(await prom.query(`${METRIC.dataProcessed}{job_id="j2"}`)).toEqual([]);
    expect(await prom.value(`${METRIC.blockData}{role="source",class="urgent"}`)).toBe(512);
    expect(await prom.value(`${METRIC.blockData}{role="source",class="bulk"}`)).toBe(3584);
    expect(await prom.value(`${METRIC.blockData}{role="dest",class="bulk"}`)).toBe(processed);
    expect(await prom.value(`${METRIC.dataProcessed}{job_id="j1"}`)).toBe(processed);
  });

  it('scrapes over mutual TLS off loopback with a client certificate from the CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-prom-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const metrics = new ServiceMetrics(() => [jobStatus({ id: 'tls-job', dataProcessedBytes: 1234 })]);
    const { prom } = await serveAndScrape(metrics, { dir });
    expect((await prom.target()).scrapeUrl).toMatch(/^https:/);
    expect(await prom.value(`${METRIC.dataProcessed}{job_id="tls-job"}`)).toBe(1234);
  });
});
