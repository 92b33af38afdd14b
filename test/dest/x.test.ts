import { afterEach, beforeEach, it, vi } from 'vitest';
import { simulate, quantile } from '../helpers/path-sim.js';
const MiB = 1024 * 1024;
const perMs = (mibps: number) => (mibps * MiB) / 1000;
beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] }));
afterEach(() => vi.useRealTimers());
const cases = (process.env.CASES ?? '1:20').split(',').map((c) => c.split(':').map(Number));
for (const [rtt, mb, dem] of cases) {
  it(`${rtt}ms ${mb}`, () => {
    const r = simulate({ blocks: 1024, path: { rttMs: rtt!, rate: perMs(mb!) }, ...(dem ? {} : { demandEveryMs: 5 }) });
    const q = r.queueDelays.map(([, d]) => d);
    const lat = r.demand.map(([, l]) => l);
    console.log(`R ${rtt} ${mb}: done ${r.doneMs.toFixed(0)} ms goodput ${(r.goodput * 1000 / MiB).toFixed(1)} MiB/s queue p50 ${quantile(q, 0.5).toFixed(2)} p99 ${quantile(q, 0.99).toFixed(2)}; demand n ${lat.length} p50 ${quantile(lat, 0.5).toFixed(1)} p99 ${quantile(lat, 0.99).toFixed(1)}; maxWin ${(r.maxWindowSeen / MiB).toFixed(2)}; path ${JSON.stringify(r.fetcher.path.report(performance.now()))}`);
    console.log('  trace: ' + r.trace.filter((_, i) => i % 20 === 0).slice(0, 25).map(([t, w, p, ph]) => `${t.toFixed(0)}:${(w / 1024).toFixed(0)}K/${p === null ? '-' : ((p * 1000) / MiB).toFixed(1)}/${ph}`).join(' '));
  });
}
