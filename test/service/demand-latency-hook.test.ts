// D's demand latencies reach the service's histogram: a real in-process migration over TCP with a running guest,
// DestAgentOptions.onDemandLatency wired to ServiceMetrics.demandFetch as the service wires it.
import { afterEach, describe, expect, it } from 'vitest';
import { METRIC, ServiceMetrics } from '../../src/service/metrics.js';
import { startHarness, type Harness } from '../integration/harness.js';
import { parseExposition, valueOf } from './metrics-fixtures.js';

let h: Harness | null = null;
afterEach(async () => {
  await h?.cleanup();
  h = null;
});

describe('the demand-latency hook', () => {
  it("hands every demand fetch D's store records to the metrics, in seconds", async () => {
    const metrics = new ServiceMetrics(() => []);
    const seen: number[] = [];
    h = await startHarness({
      onDemandLatency: (ms) => {
        seen.push(ms);
        metrics.demandFetch('dest', ms / 1000);
      },
    });
    const [, d] = await Promise.all([h.source.run(), h.dest.done]);
    expect(d.phase).toBe('confirmed');
    const recorded = h.dest.store!.demandLatency.count;
    expect(recorded).toBeGreaterThan(0);
    expect(seen).toHaveLength(recorded);
    const s = parseExposition(await metrics.metricsText());
    expect(valueOf(s, `${METRIC.demandFetch}_count`, { role: 'dest' })).toBe(recorded);
    expect(valueOf(s, `${METRIC.demandFetch}_sum`, { role: 'dest' })).toBeCloseTo(seen.reduce((a, b) => a + b, 0) / 1000, 9);
  });
});
