// Process plumbing for the macro tier: spawn with wall-clock timing, CPU from /proc (a reaped child's CPU
// lands in our cutime/cstime; a running server's in its own utime/stime), event files, ports, page-cache hygiene.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { assertValidEvent } from './event-schema.js';

let clkTck = 100;
try {
  clkTck = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
} catch {
  // 100 is the Linux default.
}

function statFields(path: string): string[] | null {
  try {
    const text = readFileSync(path, 'utf8');
    // Fields after "(comm)"; comm may hold spaces. Field 3 (state) is index 0 here.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** CPU seconds of every child of ours that has been reaped so far (cutime + cstime). */
export function reapedChildrenCpuSec(): number {
  const f = statFields('/proc/self/stat')!;
  return (Number(f[13]) + Number(f[14])) / clkTck;
}

/** CPU seconds a running process has used so far (utime + stime), or NaN when it is gone. */
export function processCpuSec(pid: number): number {
  const f = statFields(`/proc/${pid}/stat`);
  if (!f) return NaN;
  return (Number(f[11]) + Number(f[12])) / clkTck;
}

/** VmHWM / VmRSS of a running process in KiB. */
export function processMemKiB(pid: number): { hwm: number; rss: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    return { hwm: get('VmHWM'), rss: get('VmRSS') };
  } catch {
    return null;
  }
}

export interface Spawned {
  child: ChildProcess;
  startMs: number;
  exited: Promise<{ code: number | null; signal: string | null; endMs: number }>;
}

/** Start a process with stdout/stderr appended to a log file (no pipe through our event loop). */
export function start(cmd: string, args: readonly string[], opts: { log?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Spawned {
  const fd = opts.log ? openSync(opts.log, 'a') : 'ignore';
  const startMs = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: opts.env ?? process.env, cwd: opts.cwd });
  if (typeof fd === 'number') closeSync(fd);
  const exited = new Promise<{ code: number | null; signal: string | null; endMs: number }>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal, endMs: performance.now() }));
  });
  return { child, startMs, exited };
}

export interface TimedRun {
  wallMs: number;
  code: number | null;
  /** CPU seconds of the process (from our cutime/cstime after it was reaped). */
  cpuSec: number;
}

/** Run one command to completion: whole-process wall time and its CPU. Nothing else of ours may exit meanwhile. */
export async function timed(cmd: string, args: readonly string[], opts: { log?: string; env?: NodeJS.ProcessEnv } = {}): Promise<TimedRun> {
  const cpu0 = reapedChildrenCpuSec();
  const s = start(cmd, args, opts);
  const r = await s.exited;
  return { wallMs: r.endMs - s.startMs, code: r.code, cpuSec: reapedChildrenCpuSec() - cpu0 };
}

export function sh(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}

/** Remove an output file and write back dirty pages, so one run's writeback does not land in the next. */
export function freshOutput(...paths: string[]): void {
  for (const p of paths) rmSync(p, { recursive: true, force: true });
  spawnSync('sync');
}

export interface BenchEvent {
  schemaVersion: number;
  ts: string;
  role: string;
  sessionId: string | null;
  event: string;
  [k: string]: unknown;
}

export function readEvents(path: string): BenchEvent[] {
  if (!existsSync(path)) return [];
  const out: BenchEvent[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as BenchEvent);
    } catch {
      // A line being written right now: the next poll sees it whole.
    }
  }
  return out;
}

/**
 * Follows an events file by reading only what was appended since the last poll: for polling while latency is
 * measured in this process (re-reading and parsing the whole growing file every few ms blocked the reads' client).
 */
export class EventTail {
  readonly #path: string;
  #offset = 0;
  #partial = '';
  readonly #seen = new Set<string>();

  constructor(path: string) {
    this.#path = path;
  }

  /** Whether an event of this name has been written so far. */
  has(name: string): boolean {
    this.#poll();
    return this.#seen.has(name);
  }

  #poll(): void {
    if (!existsSync(this.#path)) return;
    const fd = openSync(this.#path, 'r');
    try {
      const chunk = Buffer.alloc(64 * 1024);
      for (let n = readSync(fd, chunk, 0, chunk.length, this.#offset); n > 0; n = readSync(fd, chunk, 0, chunk.length, this.#offset)) {
        this.#offset += n;
        const lines = (this.#partial + chunk.toString('utf8', 0, n)).split('\n');
        this.#partial = lines.pop()!;
        for (const line of lines) {
          try {
            this.#seen.add((JSON.parse(line) as BenchEvent).event);
          } catch {
            // Not an event line.
          }
        }
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** The last event of this name, checked against schema/events.v1.json: the bench reads its fields as the schema names them. */
export function lastEvent(path: string, name: string): BenchEvent | undefined {
  const e = readEvents(path).filter((x) => x.event === name).pop();
  if (e) assertValidEvent(e, path);
  return e;
}

/** Poll an events file until an event matches (or the process exits, or time runs out). */
export async function waitForEvent(path: string, name: string, opts: { timeoutMs?: number; pollMs?: number; exited?: Promise<unknown> } = {}): Promise<BenchEvent> {
  const deadline = performance.now() + (opts.timeoutMs ?? 60_000);
  let gone = false;
  void opts.exited?.then(() => (gone = true));
  for (;;) {
    const e = lastEvent(path, name);
    if (e) return e;
    if (gone) throw new Error(`process exited before '${name}' in ${path}`);
    if (performance.now() > deadline) throw new Error(`timed out waiting for '${name}' in ${path}`);
    await sleep(opts.pollMs ?? 5);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export { freePort } from '../../src/common/free-port.js';

/** Wait until a TCP port or Unix socket accepts connections. */
export async function waitConnectable(target: { port: number } | { path: string }, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = 'port' in target ? connect({ host: '127.0.0.1', port: target.port }) : connect({ path: target.path });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (performance.now() > deadline) throw new Error(`nothing listening on ${JSON.stringify(target)}`);
    await sleep(20);
  }
}

/** A long-running helper (qemu-nbd, nbdkit, the pipe sender): started before the timed runs, stopped after. */
export class Server {
  constructor(
    readonly name: string,
    readonly spawned: Spawned,
  ) {}
  get pid(): number {
    return this.spawned.child.pid!;
  }
  cpuSec(): number {
    return processCpuSec(this.pid);
  }
  async stop(): Promise<void> {
    if (this.spawned.child.exitCode !== null || this.spawned.child.signalCode !== null) return;
    this.spawned.child.kill('SIGTERM');
    const t = setTimeout(() => this.spawned.child.kill('SIGKILL'), 5000);
    await this.spawned.exited.catch(() => undefined);
    clearTimeout(t);
  }
}
