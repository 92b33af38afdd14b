// Starts the destination QEMU from the operator's command template: placeholders filled in (shell-quoted), the
// flags our Finish rule needs added, stderr kept in a log; the process outlives the agent's own signals.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { PRIVATE_FILE_MODE } from '../common/constants.js';
import { UsageError } from '../common/errors.js';
import { shellQuote } from '../common/shell.js';
import { QEMU_LOG_QUOTE_CHARS, QEMU_LOG_QUOTE_LINES } from './constants.js';

export interface TemplateValues {
  /** D's NBD export (the guest's disk). */
  export: string;
  /** The QMP socket this agent talks to. */
  qmp: string;
  /** The guest's serial console log. */
  serial: string;
}

export const PLACEHOLDERS = ['{export}', '{qmp}', '{serial}'] as const;

/**
 * The command line to run with `sh -c`. `-incoming defer` is added when missing (the stream is fed over QMP),
 * and so is `-S` (belt and braces: the agent also sends `stop`, which clears autostart during an incoming
 * migration), and a QMP socket when the template has no `{qmp}`.
 */
export function expandTemplate(template: string, v: TemplateValues): string {
  if (!template.includes('{export}')) throw new UsageError('PC_ERR_USAGE', '--qemu-cmd must use {export} for the guest disk (D\'s NBD export)');
  let cmd = template.replace(/\{(export|qmp|serial)\}/g, (_, k: keyof TemplateValues) => shellQuote(v[k]));
  if (!/\{qmp\}/.test(template)) cmd += ` -qmp ${shellQuote(`unix:${v.qmp},server=on,wait=off`)}`;
  if (!/(^|\s)-incoming(\s|$)/.test(template)) cmd += ' -incoming defer';
  else if (!/-incoming\s+defer\b/.test(template)) throw new UsageError('PC_ERR_USAGE', '--qemu-cmd: use -incoming defer (the agent feeds the stream over QMP)');
  if (!/(^|\s)-S(\s|$)/.test(template)) cmd += ' -S';
  return cmd;
}

export interface QemuProcess {
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  /** The last lines QEMU wrote on stderr, for a one-line error. */
  lastError(): string;
  kill(): Promise<void>;
}

export function spawnQemu(command: string, logPath: string): QemuProcess {
  const fd = openSync(logPath, 'a', PRIVATE_FILE_MODE); // QEMU's log may show guest data: private when we create it
  // Its own process group: a Ctrl-C meant for the agent must not kill the guest it hands the disk to.
  let child: ChildProcess;
  try {
    child = spawn('/bin/sh', ['-c', `exec ${command}`], { stdio: ['ignore', fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  child.unref();
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
    child.once('error', () => {
      alive = false;
      resolve({ code: null, signal: null });
    });
  });
  return {
    pid: child.pid ?? -1,
    exited,
    get alive() {
      return alive;
    },
    lastError: () => lastLines(logPath),
    kill: async () => {
      if (!alive) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

function lastLines(path: string): string {
  try {
    const lines = readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
    return lines.slice(-QEMU_LOG_QUOTE_LINES).join(' / ').slice(0, QEMU_LOG_QUOTE_CHARS);
  } catch {
    return '';
  }
}
