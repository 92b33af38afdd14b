// The loopback WAN emulator (bench/lib/wan-proxy.ts) as its own process, so its timers never share an event loop
// with a process whose timings are measured. Prints {"port":N} as one JSON line on stdout once it listens.
// Lines on stdin: `stats` prints the counters as one JSON line; `cut` cuts every proxied connection;
// `path RTT_MS [RATE_BYTES_PER_SEC]` changes the path. SIGTERM (or SIGINT) prints the counters, closes and exits 0.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { WanProxy } from './lib/wan-proxy.js';

const USAGE = 'usage: wan-proxy-main --target HOST:PORT [--rtt MS] [--rate BYTES_PER_SEC] [--queue BYTES] [--wire BYTES]';

function num(v: string | undefined, name: string, dflt?: number): number | undefined {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number ≥ 0, got '${v}'\n${USAGE}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { target: { type: 'string' }, rtt: { type: 'string' }, rate: { type: 'string' }, queue: { type: 'string' }, wire: { type: 'string' } },
  });
  const m = /^(.*):(\d+)$/.exec(values.target ?? '');
  if (!m) throw new Error(USAGE);
  const queueBytes = num(values.queue, '--queue');
  const wireBytes = num(values.wire, '--wire');
  const proxy = await WanProxy.start({
    target: { host: m[1]!, port: Number(m[2]) },
    rttMs: num(values.rtt, '--rtt', 0)!,
    rateBytesPerSec: num(values.rate, '--rate', 0)!,
    ...(queueBytes !== undefined ? { queueBytes } : {}),
    ...(wireBytes !== undefined ? { wireBytes } : {}),
  });
  const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
  say({ port: proxy.port });
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const [cmd, a, b] = line.trim().split(/\s+/);
    if (cmd === 'stats') say({ stats: proxy.stats() });
    else if (cmd === 'cut') proxy.cutAll();
    else if (cmd === 'path') proxy.setPath({ rttMs: Number(a), rateBytesPerSec: b === undefined ? null : Number(b) });
  });
  const stop = async () => {
    say({ stats: proxy.stats() });
    lines.close();
    await proxy.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((e: unknown) => {
  process.stderr.write(`wan-proxy: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
