// Start the real `postcopy` CLI (the built dist/) as child processes and read their JSON-lines events.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { expect } from 'vitest';
import { assertValidEvent } from '../../../bench/lib/event-schema.js';
import { AGENT_NODE_FLAGS } from '../../../src/cli/node-flags.js';
import { waitUntil } from '../../helpers/wait.js';

export const CLI = resolve(__dirname, '../../../dist/cli/main.js');

/**
 * Tests that run the CLI as a second, unprivileged user need it to reach the checkout (dist/, node_modules/): a
 * clone in a 0700 directory (what `mktemp -d` makes) would fail them for a reason that is not theirs. Each
 * directory above the checkout that others cannot traverse gets o+x (search only, nothing listed or read).
 */
export function letOthersReachCheckout(): void {
  for (let d = resolve(__dirname, '../../..'); ; d = dirname(d)) {
    const mode = statSync(d).mode & 0o7777;
    if ((mode & 0o001) === 0) chmodSync(d, mode | 0o001);
    if (dirname(d) === d) return;
  }
}

export interface Agent {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

export function startAgent(args: string[], env: NodeJS.ProcessEnv = {}): Agent {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (npm test does)`);
  const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POSTCOPY_LOG_LEVEL: 'info', ...env } });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })),
  );
  return { child, stderr: () => err, exit };
}

export interface EventLine {
  schemaVersion: number;
  ts: string;
  role: 'source' | 'dest';
  sessionId: string | null;
  event: string;
  [k: string]: unknown;
}

/** Lines already found valid (the files are polled whole, again and again). */
const validLines = new Set<string>();

/** Every whole line of an events file, each checked against schema/events.v1.json: a mismatch fails the test. */
export function readEvents(path: string): EventLine[] {
  if (!existsSync(path)) return [];
  // Only whole lines: a writer may be in the middle of the last one while we read.
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.pop();
  return lines
    .filter((l) => l.length > 0)
    .map((l) => {
      const e = JSON.parse(l) as EventLine;
      if (!validLines.has(l)) {
        assertValidEvent(e, path);
        validLines.add(l);
      }
      return e;
    });
}

/** Resolves with the first event matching `pred` (polling the file), or rejects after timeoutMs. */
export async function waitForEvent(path: string, pred: (e: EventLine) => boolean, timeoutMs = 30_000): Promise<EventLine> {
  let hit: EventLine | undefined;
  await waitUntil(() => (hit = readEvents(path).find(pred)) !== undefined, `a matching event in ${path}`, timeoutMs);
  return hit!;
}

/** The operator-facing lines of an agent's stderr: everything but its JSON log records. */
export function humanLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim().length > 0 && !l.startsWith('{'));
}

/** A refusal: exactly one human line, naming `code`, with no stack trace. */
export function expectOneLineRefusal(stderr: string, code: string): void {
  const lines = humanLines(stderr);
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0], stderr).toContain(code);
  expect(stderr).not.toMatch(/\n\s+at /);
}

export { freePort } from '../../../src/common/free-port.js';

export function workDir(prefix: string): { dir: string; ticket: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `postcopy-${prefix}-`));
  const ticket = join(dir, 'ticket');
  writeFileSync(ticket, randomBytes(24).toString('hex') + '\n', { mode: 0o600 });
  return { dir, ticket, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * What a test started, undone after it: agents still running are killed (and awaited), then the other
 * clean-ups run last-registered first (a server before the directory it lives in).
 */
export class Teardown {
  #agents: Agent[] = [];
  #later: Array<() => void | Promise<void>> = [];

  agent(a: Agent): Agent {
    this.#agents.push(a);
    return a;
  }

  later(fn: () => void | Promise<void>): void {
    this.#later.push(fn);
  }

  async run(): Promise<void> {
    const agents = this.#agents;
    const later = this.#later;
    this.#agents = [];
    this.#later = [];
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exit));
    for (const fn of later.reverse()) await fn();
  }
}

/** An image of random bytes: nothing for S to skip as zeroes, so a bulk rate measured on it is the data rate. */
export function writeRandomImage(path: string, size: number): void {
  const MiB = 1024 * 1024;
  const fd = openSync(path, 'w', 0o600);
  const buf = Buffer.alloc(MiB);
  try {
    for (let at = 0; at < size; at += MiB) writeSync(fd, randomFillSync(buf), 0, Math.min(MiB, size - at), at);
  } finally {
    closeSync(fd);
  }
}
