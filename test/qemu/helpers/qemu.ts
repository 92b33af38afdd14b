// The QEMU test guest for the migration tests: builds (or reuses) kernel + initrd, starts the source QEMU,
// writes the destination's command template, and watches serial logs line by line with host timestamps.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { shellQuote } from '../../../src/common/shell.js';
import { IN_CI, assertTools, skipWithout } from '../../nbd/helpers/tools.js';

/** QEMU, and what builds the guest from Debian packages. */
export const QEMU_TOOLS = ['qemu-system-x86_64', 'apt-get', 'apt-cache', 'dpkg-deb'] as const;
/** Skipped outside CI when one is missing; under CI=true the suite fails instead. */
export const skipQemu = (): boolean => skipWithout(QEMU_TOOLS);
export const assertQemu = (): void => assertTools(QEMU_TOOLS);
export { IN_CI };

const SCRIPT = resolve(__dirname, '../../../scripts/build-test-guest.sh');

export interface TestGuest {
  kernel: string;
  initrd: string;
}

/** Kernel + initrd from Debian packages, cached outside the repo per kernel version (about 10 s the first time). */
export function buildTestGuest(): TestGuest {
  const dir = execFileSync(SCRIPT, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 }).trim().split('\n').pop()!;
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) throw new Error(`build-test-guest.sh gave ${dir} without vmlinuz/initrd.gz`);
  return { kernel, initrd };
}

export interface GuestParams {
  /** Region the guest rewrites: start and size in 4 KiB blocks. */
  base: number;
  blocks: number;
  /** The block the host sets to STOP to end the loop. */
  flag: number;
  iters: number;
  delay: number;
  /** Fresh-read timing (init's READ lines): the top block, the step down between reads, reads per iteration. */
  fresh?: { top: number; stride: number; perLoop: number };
}

/**
 * Guest RAM: 256 MiB and one 4 KiB page. QEMU 7.2 under TCG loses guest writes during live migration when RAM is a
 * multiple of 256 KiB: its fast dirty-bitmap sync does not reset TCG's TLB, so later writes go unmarked and are never
 * sent (fixed upstream in 9.0, commit 03bfc2188f06 "physmem: Fix migration dirty bitmap coherency with TCG memory
 * access"). Measured on this machine with plain QEMU-to-QEMU migrations of this guest: 12 of 48 destination kernels
 * faulted at 256 MiB, 0 of 24 at this size (the slow sync path resets the TLB). KVM is not affected.
 */
const GUEST_RAM = '262148K';

/** The machine both sides run; explicit disk geometry keeps QEMU from reading block 0 while it probes. */
export function machineArgs(g: TestGuest, p: GuestParams): string[] {
  return [
    '-machine', 'q35,accel=tcg', '-m', GUEST_RAM, '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-kernel', g.kernel, '-initrd', g.initrd,
    '-append',
    `console=ttyS0 quiet iters=${p.iters} blocks=${p.blocks} base=${p.base} flag=${p.flag} delay=${p.delay}` +
      (p.fresh ? ` fresh=${p.fresh.top} fstride=${p.fresh.stride} freads=${p.fresh.perLoop}` : ''),
  ];
}

const DISK_DEVICE = ['-device', 'virtio-blk-pci,drive=d0,cyls=32,heads=16,secs=63'];

export interface RunningQemu {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

export function startSourceQemu(g: TestGuest, p: GuestParams, o: { image: string; qmp: string; serial: string }): RunningQemu {
  const args = [
    ...machineArgs(g, p),
    '-serial', `file:${o.serial}`,
    '-qmp', `unix:${o.qmp},server=on,wait=off`,
    '-drive', `file=${o.image},format=raw,if=none,id=d0`,
    ...DISK_DEVICE,
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  return { child, exit, stderr: () => err };
}

/**
 * `postcopy dest --qemu-cmd`: the same machine, its disk on D's export, its console in {serial}; written over
 * several lines as an operator would (README), each option on its own line, `\` continuations or none.
 */
export function destTemplate(g: TestGuest, p: GuestParams, lineEnd: ' \\\n    ' | '\n' = ' \\\n    '): string {
  const args = machineArgs(g, p).map(shellQuote);
  const lines = ['qemu-system-x86_64'];
  // One option per line with its value, as written by hand.
  for (const a of args) {
    if (a.startsWith('-')) lines.push(a);
    else lines[lines.length - 1] += ` ${a}`;
  }
  lines.push('-serial file:{serial}', '-drive file={export},format=raw,if=none,id=d0', DISK_DEVICE.join(' '));
  return lines.join(lineEnd);
}

/** A guest kernel fault on the console (panic, oops, GPF, BUG, init killed): the TCG flake (qemu-migration.test.ts). */
export const GUEST_KERNEL_FAULT =
  /Kernel panic|Oops|general protection fault|BUG: |kernel BUG at|invalid opcode|Bad pagetable|Corrupted page table|Fixing recursive fault|Attempted to kill init|segfault at|double free or corruption/;

export interface SerialLine {
  text: string;
  /** Host time the watcher first saw the line complete. */
  at: number;
  log: 'source' | 'dest';
}

/**
 * Polls the two serial logs and time-stamps each line as it completes. A line may be split between the
 * logs (the source stopped mid-line): the source's unfinished tail is joined to the destination's head.
 */
export class SerialWatcher {
  readonly lines: SerialLine[] = [];
  #srcLen = 0;
  #dstLen = 0;
  /** The unfinished last line of each log. */
  #srcPart = '';
  #dstPart = '';
  #srcDone = false;
  #dstPath: string | null = null;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly srcPath: string) {
    this.#timer = setInterval(() => this.poll(), 20);
  }

  /** The destination's log exists from when D starts its QEMU; until then only the source's is read. */
  setDest(path: string): void {
    this.#dstPath = path;
  }

  poll(): void {
    const src = this.#srcDone ? '' : readIfExists(this.srcPath);
    if (src.length > this.#srcLen) {
      this.#srcPart = this.#take(this.#srcPart + src.slice(this.#srcLen), 'source');
      this.#srcLen = src.length;
    }
    const dst = this.#dstPath ? readIfExists(this.#dstPath) : '';
    if (dst.length > this.#dstLen) {
      if (!this.#srcDone) {
        // From the destination's first byte on, the source's console is over: its unfinished line continues here.
        this.#srcDone = true;
        this.#dstPart = this.#srcPart;
      }
      this.#dstPart = this.#take(this.#dstPart + dst.slice(this.#dstLen), 'dest');
      this.#dstLen = dst.length;
    }
  }

  /** Pushes the complete lines of `text`, returns the unfinished rest. */
  #take(text: string, log: 'source' | 'dest'): string {
    const parts = text.split('\n');
    const rest = parts.pop()!;
    for (const t of parts) this.#push(t, log);
    return rest;
  }

  #push(raw: string, log: 'source' | 'dest'): void {
    const text = raw.replace(/\r$/, '');
    if (text.length > 0) this.lines.push({ text, at: Date.now(), log });
  }

  loops(log?: 'source' | 'dest'): SerialLine[] {
    return this.lines.filter((l) => l.text.startsWith('LOOP ') && (!log || l.log === log));
  }

  find(prefix: string): SerialLine | undefined {
    return this.lines.find((l) => l.text.startsWith(prefix));
  }

  /** A waiter gives up at once when the guest's kernel faulted: nothing it waits for can come any more. */
  async waitFor(pred: (l: SerialLine) => boolean, timeoutMs: number, what: string): Promise<SerialLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const hit = this.lines.find(pred);
      if (hit) return hit;
      const fault = this.lines.find((l) => GUEST_KERNEL_FAULT.test(l.text));
      if (fault) throw new Error(`serial console: the guest's kernel faulted (${fault.text}) while waiting for ${what}`);
      if (Date.now() > deadline) throw new Error(`serial console: no ${what} within ${timeoutMs} ms; last lines: ${this.lines.slice(-12).map((l) => l.text).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

function readIfExists(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return '';
  }
}
