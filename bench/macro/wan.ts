// WAN tier: the whole migration of a 512 MiB mixed image with S connecting through a loopback WAN emulator
// (bench/lib/wan-proxy.ts, run as its own process by bench/wan-proxy-main.ts so its timers never share an event loop
// with this process's timing client), over several paths: no delay (the same-run baseline), 20 ms RTT, 20 ms RTT
// through a 100 MiB/s bottleneck, 80 ms RTT through 50 MiB/s, and the 100 MiB/s path again with mutual TLS.
// Per run: whole-process and cut-over→complete times, bulk goodput (D's bytesFetchedBulk ÷ cut-over→complete), and
// 4 KiB demand misses through D's NBD export while the stream runs, one at a time at the latency tier's offsets
// (descending from the image's end; only reads D logged as misses count), the proxy's largest bottleneck queue, and
// D's path estimate when its summary has one (`path`).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NbdClient } from '../../src/nbd/client.js';
import type { BenchImage } from '../lib/images.js';
import { EventTail, sleep } from '../lib/proc.js';
import { latencySummary, spread, type LatencySummary, type Spread } from '../lib/stats.js';
import { MiB, mib, sec } from '../lib/units.js';
import type { WanProxyStats } from '../lib/wan-proxy.js';
import { READ, missTargets } from './latency.js';
import { cleanRun, migrate } from './migrate.js';

const PROXY_MAIN = fileURLToPath(new URL('../wan-proxy-main.js', import.meta.url));
/** How often the read loop looks at D's events for `complete` (a look per read would load the timed client). */
const COMPLETE_POLL_MS = 20;

export interface WanScenario {
  id: 'none' | 'rtt20' | 'rtt20-100' | 'rtt80-50' | 'rtt20-100-tls';
  label: string;
  rttMs: number;
  /** Bottleneck rate in bytes/s; null: no cap. */
  rateBytesPerSec: number | null;
  tls: boolean;
}

export const WAN_SCENARIOS: readonly WanScenario[] = [
  { id: 'none', label: 'no delay', rttMs: 0, rateBytesPerSec: null, tls: false },
  { id: 'rtt20', label: '20 ms RTT', rttMs: 20, rateBytesPerSec: null, tls: false },
  { id: 'rtt20-100', label: '20 ms RTT, 100 MiB/s', rttMs: 20, rateBytesPerSec: 100 * MiB, tls: false },
  { id: 'rtt80-50', label: '80 ms RTT, 50 MiB/s', rttMs: 80, rateBytesPerSec: 50 * MiB, tls: false },
  { id: 'rtt20-100-tls', label: '20 ms RTT, 100 MiB/s, TLS', rttMs: 20, rateBytesPerSec: 100 * MiB, tls: true },
];

/** D's path estimate as its summary reports it (any field may be absent). */
export type PathEstimate = Partial<Record<'minRttMs' | 'rttMs' | 'bottleneckBytesPerSec' | 'windowBytes' | 'pacingBytesPerSec', number>> & { phase?: string };

export interface WanRun {
  wholeMs: number;
  transferMs: number;
  bulkBytes: number;
  goodputMiBps: number;
  /** Client-side ms of the reads D logged as misses. */
  misses: number[];
  hits: number;
  /** Largest bottleneck queue (S → D) the proxy saw, bytes. */
  maxQueueBytes: number;
  path: PathEstimate | null;
  /** Why the run did not complete (timeout, exit code), absent when it did. */
  failure?: string;
}

export interface WanScenarioResult extends WanScenario {
  runs: WanRun[];
  wholeSec: Spread;
  transferSec: Spread;
  goodputMiBps: Spread;
  /** Demand misses pooled over the runs. */
  demand: LatencySummary;
  /** The path's own floor for a miss (64 B there, 64 KiB back, idle, through the same emulator), client-side ms. */
  floor: LatencySummary;
  maxQueueMiB: Spread;
  failures: number;
}

export interface WanResult {
  image: { path: string; size: number; dataBytes: number };
  reps: number;
  scenarios: WanScenarioResult[];
  /** Per rep: whole-process time of the 20 ms path ÷ the no-delay path's of the same rep. */
  rtt20OverNone: Spread;
}

/** The emulator's process: started once D listens, stopped after the run; its counters come back on stop. */
class ProxyProcess {
  readonly #child: ChildProcess;
  readonly #lines: unknown[] = [];
  readonly #exited: Promise<void>;

  private constructor(child: ChildProcess) {
    this.#child = child;
    createInterface({ input: child.stdout! }).on('line', (l) => this.#lines.push(JSON.parse(l)));
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  static async start(destPort: number, sc: WanScenario, log: string): Promise<{ proc: ProxyProcess; port: number }> {
    const fd = openSync(log, 'a');
    const args = [PROXY_MAIN, '--target', `127.0.0.1:${destPort}`, '--rtt', String(sc.rttMs), '--rate', String(sc.rateBytesPerSec ?? 0)];
    const proc = new ProxyProcess(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', fd] }));
    closeSync(fd);
    const deadline = performance.now() + 10_000;
    for (;;) {
      const hit = proc.#lines.find((l): l is { port: number } => typeof (l as { port?: unknown }).port === 'number');
      if (hit) return { proc, port: hit.port };
      if (proc.#child.exitCode !== null || performance.now() > deadline) throw new Error(`the WAN proxy did not start (see ${log})`);
      await sleep(5);
    }
  }

  async stop(): Promise<WanProxyStats | null> {
    if (this.#child.exitCode === null) this.#child.kill('SIGTERM');
    await this.#exited;
    const last = this.#lines.filter((l): l is { stats: WanProxyStats } => typeof l === 'object' && l !== null && 'stats' in l).pop();
    return last?.stats ?? null;
  }
}

/** A CA and leaf certificates for D (127.0.0.1, server) and S (client), made once per work directory. */
function tlsArgs(dir: string): { dest: string[]; source: string[] } {
  const at = (n: string) => join(dir, `wan-${n}`);
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  if (!existsSync(at('source.crt'))) {
    openssl(['req', '-x509', ...ec, '-days', '2', '-keyout', at('ca.key'), '-out', at('ca.crt'), '-subj', '/CN=wan-bench-ca']);
    const exts = { dest: 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n', source: 'extendedKeyUsage=clientAuth\n' };
    for (const [who, ext] of Object.entries(exts)) {
      writeFileSync(at(`${who}.ext`), ext);
      openssl(['req', ...ec, '-keyout', at(`${who}.key`), '-out', at(`${who}.csr`), '-subj', `/CN=wan-${who}`]);
      openssl(['x509', '-req', '-in', at(`${who}.csr`), '-CA', at('ca.crt'), '-CAkey', at('ca.key'), '-CAcreateserial', '-out', at(`${who}.crt`), '-days', '2', '-extfile', at(`${who}.ext`)]);
    }
  }
  const args = (who: string) => ['--tls-cert', at(`${who}.crt`), '--tls-key', at(`${who}.key`), '--tls-ca', at('ca.crt')];
  return { dest: args('dest'), source: args('source') };
}

/** A demand miss on the wire: a request of about this size one way... */
const FLOOR_REQUEST = 64;
/** ...and a block's worth of reply the other way (the store's block: what a miss fetches). */
const FLOOR_REPLY = 64 * 1024;

/**
 * The emulated path's own floor for a miss, idle: a 64 B request from "D" and a 64 KiB reply from "S", one at a
 * time, through the same emulator process on the same path (the echo side runs here, between the timed runs). What a
 * miss can never beat on that path, whatever the agents do: the RTT, the reply's time through the bottleneck, and the
 * emulator's timer granularity.
 */
async function pathFloor(sc: WanScenario, pings: number, log: string): Promise<number[]> {
  const echo = createServer((s) => {
    s.setNoDelay(true);
    let got = 0;
    s.on('data', (c: Buffer) => {
      for (got += c.length; got >= FLOOR_REQUEST; got -= FLOOR_REQUEST) s.write(Buffer.alloc(FLOOR_REPLY));
    });
    s.on('error', () => undefined);
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  const { proc, port } = await ProxyProcess.start((echo.address() as { port: number }).port, sc, log);
  const out: number[] = [];
  try {
    const c = connect({ port, host: '127.0.0.1' });
    c.setNoDelay(true);
    await once(c, 'connect');
    let pending = 0;
    let wake: (() => void) | null = null;
    c.on('data', (d: Buffer) => {
      pending -= d.length;
      if (pending <= 0) wake?.();
    });
    for (let i = 0; i < pings; i++) {
      pending = FLOOR_REPLY;
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        wake = resolve;
        c.write(Buffer.alloc(FLOOR_REQUEST));
      });
      out.push(performance.now() - t0);
    }
    c.destroy();
  } finally {
    await proc.stop();
    echo.close();
  }
  return out;
}

const exitText = (code: number | null) => (code === null ? 'killed' : `exited ${code}`);
const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

async function oneRun(image: BenchImage, sc: WanScenario, rep: number, o: { workDir: string; timeoutMs: number }): Promise<WanRun> {
  const label = `wan-${sc.id}`;
  const sock = join(o.workDir, `${label}.nbd.sock`);
  const tls = sc.tls ? tlsArgs(o.workDir) : { dest: [], source: [] };
  const timed: Array<[offset: number, ms: number]> = [];
  let proxy: ProxyProcess | null = null;
  let stats: WanProxyStats | null = null;
  let readError: string | null = null;
  try {
    const m = await migrate({
      workDir: o.workDir,
      image: image.path,
      label,
      timeoutMs: o.timeoutMs,
      destArgs: ['--nbd-socket', sock, ...tls.dest],
      sourceArgs: tls.source,
      destEnv: { PCB_READ_LOG: '1' },
      connectVia: async (destPort) => {
        const started = await ProxyProcess.start(destPort, sc, join(o.workDir, `${label}.proxy.log`));
        proxy = started.proc;
        return started.port;
      },
      afterCutover: async ({ dest, destEvents }) => {
        const tail = new EventTail(destEvents);
        let done = false;
        try {
          const nbd = await NbdClient.connect({ socketPath: sock }, 'disk');
          try {
            let looked = performance.now();
            for (const off of missTargets(image, 3000 + rep)) {
              const t0 = performance.now();
              if (t0 - looked >= COMPLETE_POLL_MS) {
                looked = t0;
                if ((done = tail.has('complete'))) break;
              }
              await nbd.read(off, READ);
              timed.push([off, performance.now() - t0]);
            }
          } finally {
            await nbd.close().catch(() => undefined);
          }
        } catch (e) {
          // D went away (the run's timeout: reported as failed below), or a read failed while D ran: that is said too.
          readError = e instanceof Error ? e.message : String(e);
        }
        while (!done && alive(dest.child)) {
          done = tail.has('complete');
          if (!done) await sleep(COMPLETE_POLL_MS);
        }
        // D serves the local image after complete until SIGTERM; S exits by itself.
        if (alive(dest.child)) dest.child.kill('SIGTERM');
      },
    });
    stats = await (proxy as ProxyProcess | null)?.stop() ?? null;
    const missed = new Set((m.dest?.reads ?? []).filter(([, miss]) => miss === 1).map(([off]) => off));
    const misses = timed.filter(([off]) => missed.has(off)).map(([, ms]) => ms);
    const ds = m.destSummary ?? {};
    const bulkBytes = Number(ds.bytesFetchedBulk ?? NaN);
    const ok = m.sourceCode === 0 && m.destCode === 0 && m.destSummary !== null && readError === null;
    return {
      wholeMs: ok ? m.wholeMs : NaN,
      transferMs: ok ? m.transferMs : NaN,
      bulkBytes,
      goodputMiBps: ok ? mib(bulkBytes) / sec(m.transferMs) : NaN,
      misses,
      // Without D's read log (D killed by the timeout) nothing is known to be a miss or a hit.
      hits: m.dest ? timed.length - misses.length : 0,
      maxQueueBytes: stats?.toTarget.maxQueueBytes ?? NaN,
      path: (ds.path as PathEstimate | undefined) ?? null,
      ...(ok ? {} : { failure: `S ${exitText(m.sourceCode)}, D ${exitText(m.destCode)}${m.destSummary ? '' : ', no summary'}${readError === null ? '' : `, a demand read failed: ${readError}`} (timeout ${sec(o.timeoutMs)} s)` }),
    };
  } finally {
    await (proxy as ProxyProcess | null)?.stop();
    cleanRun(o.workDir, label);
  }
}

const fx = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));

/** "min RTT 20.3 ms, RTT 24.1 ms, bottleneck 98 MiB/s, window 3.1 MiB, pacing 95 MiB/s, phase probe": what D's summary has. */
export function pathLine(p: PathEstimate | null): string {
  if (!p) return "D's summary has no path estimate";
  const parts: string[] = [];
  if (p.minRttMs !== undefined) parts.push(`min RTT ${fx(p.minRttMs)} ms`);
  if (p.rttMs !== undefined) parts.push(`RTT ${fx(p.rttMs)} ms`);
  if (p.bottleneckBytesPerSec !== undefined) parts.push(`bottleneck ${fx(mib(p.bottleneckBytesPerSec), 0)} MiB/s`);
  if (p.windowBytes !== undefined) parts.push(`window ${fx(mib(p.windowBytes))} MiB`);
  if (p.pacingBytesPerSec !== undefined) parts.push(`pacing ${fx(mib(p.pacingBytesPerSec), 0)} MiB/s`);
  if (p.phase !== undefined) parts.push(`phase ${p.phase}`);
  return parts.join(', ') || 'path estimate (empty)';
}

export async function runWan(image: BenchImage, o: { workDir: string; reps: number; timeoutMs: number; floorPings: number }, log: (l: string) => void): Promise<WanResult> {
  const runs = new Map<WanScenario['id'], WanRun[]>(WAN_SCENARIOS.map((s) => [s.id, []]));
  const floors = new Map<WanScenario['id'], LatencySummary>();
  for (const sc of WAN_SCENARIOS.filter((s) => !s.tls)) {
    const f = latencySummary(await pathFloor(sc, o.floorPings, join(o.workDir, `wan-floor-${sc.id}.proxy.log`)));
    floors.set(sc.id, f);
    log(`  ${sc.label}: the path's floor (64 B there, 64 KiB back, idle, ${f.count} pings) p50 ${fx(f.p50, 2)} p99 ${fx(f.p99, 2)} max ${fx(f.max, 2)} ms`);
  }
  for (let rep = 0; rep < o.reps; rep++) {
    // The order rotates per rep, so a drift in the machine's load does not always land on the same path.
    const order = WAN_SCENARIOS.map((_, i) => WAN_SCENARIOS[(i + rep) % WAN_SCENARIOS.length]!);
    for (const sc of order) {
      const r = await oneRun(image, sc, rep, o);
      runs.get(sc.id)!.push(r);
      const d = latencySummary(r.misses);
      log(
        `  ${sc.label} rep ${rep + 1}: ${r.failure ? `FAILED (${r.failure}); ` : ''}whole ${fx(sec(r.wholeMs), 2)} s, cut-over→complete ${fx(sec(r.transferMs), 2)} s, ` +
          `goodput ${fx(r.goodputMiBps, 0)} MiB/s; ${d.count} misses (${r.hits} hits) p50 ${fx(d.p50, 2)} p99 ${fx(d.p99, 2)} max ${fx(d.max, 2)} ms; ` +
          `proxy max queue ${fx(mib(r.maxQueueBytes), 2)} MiB; ${pathLine(r.path)}`,
      );
    }
  }
  const scenarios = WAN_SCENARIOS.map((sc): WanScenarioResult => {
    const rs = runs.get(sc.id)!;
    return {
      ...sc,
      runs: rs,
      wholeSec: spread(rs.map((r) => sec(r.wholeMs))),
      transferSec: spread(rs.map((r) => sec(r.transferMs))),
      goodputMiBps: spread(rs.map((r) => r.goodputMiBps)),
      demand: latencySummary(rs.flatMap((r) => r.misses)),
      floor: floors.get(sc.tls ? (sc.id.replace(/-tls$/, '') as WanScenario['id']) : sc.id) ?? latencySummary([]),
      maxQueueMiB: spread(rs.map((r) => mib(r.maxQueueBytes))),
      failures: rs.filter((r) => r.failure).length,
    };
  });
  const none = runs.get('none')!;
  const rtt20 = runs.get('rtt20')!;
  return {
    image: { path: image.path, size: image.size, dataBytes: image.dataBytes },
    reps: o.reps,
    scenarios,
    rtt20OverNone: spread(rtt20.map((r, i) => r.wholeMs / (none[i]?.wholeMs ?? NaN))),
  };
}
