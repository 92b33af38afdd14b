// Real NBD tools for interop tests: presence checks (a missing tool fails under CI=true and
// skips elsewhere), a bounded runner, and qemu-nbd / nbdkit servers on Unix sockets in a temp dir.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const IN_CI = process.env.CI === 'true';

export function toolPath(name: string): string | undefined {
  for (const dir of ['/usr/bin', '/usr/local/bin', '/usr/sbin']) {
    const p = path.join(dir, name);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // try the next directory
    }
  }
  return undefined;
}

export function missingTools(names: readonly string[]): string[] {
  return names.filter((n) => toolPath(n) === undefined);
}

/**
 * For describe.skipIf / it.skipIf: true only outside CI when a tool is missing. Under CI the test
 * runs and assertTools() fails it, so a CI machine without the tools can never pass by skipping.
 */
export function skipWithout(names: readonly string[]): boolean {
  return !IN_CI && missingTools(names).length > 0;
}

export function assertTools(names: readonly string[]): void {
  const missing = missingTools(names);
  if (missing.length > 0) throw new Error(`interop tools missing: ${missing.join(', ')} (apt-get install qemu-utils nbdkit libnbd-bin python3-libnbd)`);
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a tool to completion (bounded), never throwing on a non-zero exit. /usr/bin leads PATH:
 * nbdsh runs `python3 -m nbd`, and a pyenv python3 first on PATH lacks the nbd module.
 */
export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };
  return new Promise((resolve) => {
    execFile(toolPath(cmd) ?? cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pc-nbd-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

async function waitForSocket(socketPath: string, child: ChildProcess, stderr: () => string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}) before listening: ${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ path: socketPath });
      s.once('connect', () => {
        // A probe that leaves at once: both qemu-nbd (-t) and nbdkit tolerate it during the greeting.
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`server did not listen on ${socketPath}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface SpawnedServer {
  socketPath: string;
  uri: (exportName?: string) => string;
  stderr: () => string;
  /** SIGTERM, then wait for exit (only after our clients have closed cleanly). */
  stop: () => Promise<void>;
}

async function spawnServer(cmd: string, args: string[], socketPath: string): Promise<SpawnedServer> {
  const child = spawn(toolPath(cmd) ?? cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 100_000) err = err.slice(-50_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForSocket(socketPath, child, () => err);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    socketPath,
    uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${encodeURIComponent(socketPath)}`,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** qemu-nbd serving image on a Unix socket, persistent (-t) so several clients may come and go. */
export function startQemuNbd(image: string, socketPath: string, extra: string[] = []): Promise<SpawnedServer> {
  return spawnServer('qemu-nbd', ['-k', socketPath, '-t', '-x', 'disk', ...extra, image], socketPath);
}

/** nbdkit in the foreground on a Unix socket; args are filters, plugin and plugin args. */
export function startNbdkit(socketPath: string, args: string[]): Promise<SpawnedServer> {
  return spawnServer('nbdkit', ['-f', '--exit-with-parent', '-U', socketPath, ...args], socketPath);
}

export { freePort } from '../../../src/common/free-port.js';
