// One migration with real S and D processes on TCP loopback, timed three ways, with each agent's CPU, peak RSS
// and summary. D is started first and waited for (like a server that is already up); S is started after.
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freshOutput, lastEvent, start, waitForEvent, type BenchEvent, type Spawned } from '../lib/proc.js';

const AGENT = fileURLToPath(new URL('../agent.js', import.meta.url));

export interface AgentStats {
  code: number;
  cpuUserSec: number;
  cpuSysSec: number;
  maxRssKiB: number;
  reads: Array<[number, number, number]>;
  /** Garbage collections: count, major ones, total and p99/max pause (ms). */
  gc?: { count: number; major: number; totalMs: number; p99Ms: number; maxMs: number };
  /** With PCB_LOOP_DELAY=1: the event loop's delay (ms). */
  loopDelayMs?: { p50: number; p99: number; max: number };
}

export interface MigrationRun {
  /** S started (D already listening) → both exited: the figure compared with a client tool's whole-process time. */
  wholeMs: number;
  /** D started → both exited. */
  bothMs: number;
  /** D's cutover event → D's complete event (event timestamps, 1 ms resolution). */
  transferMs: number;
  destCode: number | null;
  sourceCode: number | null;
  dest: AgentStats | null;
  source: AgentStats | null;
  destSummary: Record<string, unknown> | null;
  sourceSummary: Record<string, unknown> | null;
  destEvents: string;
  sourceEvents: string;
}

export interface MigrationOptions {
  workDir: string;
  /** Source image (file path or NBD URI). */
  image: string;
  label: string;
  destArgs?: string[];
  sourceArgs?: string[];
  destEnv?: Record<string, string>;
  /** Extra node options for both agents (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Runs once D reports the cut-over; the run ends when both agents exit (the hook may stop them). */
  afterCutover?: (ctx: { dest: Spawned; source: Spawned; destEvents: string }) => Promise<void>;
  /** Given D's listening port, the port S connects to instead (a proxy in front of D); default: D's own. */
  connectVia?: (destPort: number) => Promise<number>;
  timeoutMs?: number;
}

export function ticketFile(workDir: string): string {
  const p = join(workDir, 'ticket');
  if (!existsSync(p)) writeFileSync(p, 'postcopy-bench-ticket-0123456789abcdef\n', { mode: 0o600 });
  return p;
}

function stats(path: string): AgentStats | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as AgentStats;
  } catch {
    return null;
  }
}

function tsMs(e: BenchEvent | undefined): number {
  return e ? Date.parse(e.ts) : NaN;
}

export async function migrate(o: MigrationOptions): Promise<MigrationRun> {
  const dir = o.workDir;
  const p = {
    out: join(dir, `${o.label}.dest.img`),
    dState: join(dir, `${o.label}.dest-state`),
    sState: join(dir, `${o.label}.source-state`),
    dEvents: join(dir, `${o.label}.dest-events.jsonl`),
    sEvents: join(dir, `${o.label}.source-events.jsonl`),
    dStats: join(dir, `${o.label}.dest-stats.json`),
    sStats: join(dir, `${o.label}.source-stats.json`),
    dLog: join(dir, `${o.label}.dest.log`),
    sLog: join(dir, `${o.label}.source.log`),
  };
  freshOutput(p.out, p.dState, p.sState, p.dEvents, p.sEvents, p.dStats, p.sStats, p.dLog, p.sLog);
  const ticket = ticketFile(dir);
  const node = process.execPath;
  const destT0 = performance.now();
  const dest = start(
    node,
    [...AGENT_NODE_FLAGS, ...(o.nodeArgs ?? []), AGENT, 'dest', '--listen', '127.0.0.1:0', '--image', p.out, '--state-dir', p.dState, '--ticket-file', ticket, '--events', p.dEvents, ...(o.destArgs ?? [])],
    { log: p.dLog, env: { ...process.env, PCB_STATS: p.dStats, ...(o.destEnv ?? {}) } },
  );
  let source: Spawned | null = null;
  const timeout = setTimeout(() => {
    dest.child.kill('SIGKILL');
    source?.child.kill('SIGKILL');
  }, o.timeoutMs ?? 300_000);
  try {
    const listening = await waitForEvent(p.dEvents, 'listening', { exited: dest.exited, pollMs: 2 });
    const port = o.connectVia ? await o.connectVia(Number(listening.port)) : Number(listening.port);
    source = start(
      node,
      [...AGENT_NODE_FLAGS, ...(o.nodeArgs ?? []), AGENT, 'source', '--connect', `127.0.0.1:${port}`, '--image', o.image, '--state-dir', p.sState, '--ticket-file', ticket, '--events', p.sEvents, ...(o.sourceArgs ?? [])],
      { log: p.sLog, env: { ...process.env, PCB_STATS: p.sStats } },
    );
    if (o.afterCutover) {
      await waitForEvent(p.dEvents, 'cutover', { exited: dest.exited, pollMs: 1, timeoutMs: o.timeoutMs ?? 300_000 });
      await o.afterCutover({ dest, source, destEvents: p.dEvents });
    }
    const [d, s] = await Promise.all([dest.exited, source.exited]);
    const end = Math.max(d.endMs, s.endMs);
    const dEv = p.dEvents;
    return {
      wholeMs: end - source.startMs,
      bothMs: end - destT0,
      transferMs: tsMs(lastEvent(dEv, 'complete')) - tsMs(lastEvent(dEv, 'cutover')),
      destCode: d.code,
      sourceCode: s.code,
      dest: stats(p.dStats),
      source: stats(p.sStats),
      destSummary: (lastEvent(dEv, 'summary') as Record<string, unknown> | undefined) ?? null,
      sourceSummary: (lastEvent(p.sEvents, 'summary') as Record<string, unknown> | undefined) ?? null,
      destEvents: p.dEvents,
      sourceEvents: p.sEvents,
    };
  } finally {
    clearTimeout(timeout);
  }
}

/** Remove what a run left behind (the destination image and state), keeping logs and events. */
export function cleanRun(workDir: string, label: string): void {
  rmSync(join(workDir, `${label}.dest.img`), { force: true });
  rmSync(join(workDir, `${label}.dest-state`), { recursive: true, force: true });
  rmSync(join(workDir, `${label}.source-state`), { recursive: true, force: true });
}

export function cpuSec(s: AgentStats | null): number {
  return s ? s.cpuUserSec + s.cpuSysSec : NaN;
}
