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
  template = joinLines(template);
  if (!template.includes('{export}')) throw new UsageError('PC_ERR_USAGE', '--qemu-cmd must use {export} for the guest disk (D\'s NBD export)');
  let cmd = template.replace(/\{(export|qmp|serial)\}/g, (_, k: keyof TemplateValues) => shellQuote(v[k]));
  if (!/\{qmp\}/.test(template)) cmd += ` -qmp ${shellQuote(`unix:${v.qmp},server=on,wait=off`)}`;
  if (!/(^|\s)-incoming(\s|$)/.test(template)) cmd += ' -incoming defer';
  else if (!/-incoming\s+defer\b/.test(template)) throw new UsageError('PC_ERR_USAGE', '--qemu-cmd: use -incoming defer (the agent feeds the stream over QMP)');
  if (!/(^|\s)-S(\s|$)/.test(template)) cmd += ' -S';
  return cmd;
}

/** A template's mistakes, found while the options are checked (before anything listens), not at Prepare. */
export function checkTemplate(template: string): void {
  expandTemplate(template, { export: 'nbd+unix:///disk?socket=/check', qmp: '/check.qmp', serial: '/check.log' });
}

/**
 * A template written over several lines (as QEMU command lines usually are) is one command: `sh -c` would end it
 * at the first newline and start QEMU with half its options. Line breaks outside quotes, with or without a
 * trailing backslash, separate arguments; inside quotes they stay part of the word, as sh reads them. A `#` that
 * starts a word would comment out every line after it once joined: refused rather than guessed at.
 */
export function joinLines(template: string): string {
  let out = '';
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if (quote) {
      // A CRLF-saved template keeps a quoted line break as the newline sh would see, not as CR LF.
      if (c === '\r' && template[i + 1] === '\n') continue;
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"') {
        out += c + (template[++i] ?? '');
        continue;
      }
      out += c;
      continue;
    }
    if (c === "'" || c === '"') quote = c;
    else if (c === '\\' && (template[i + 1] === '\n' || (template[i + 1] === '\r' && template[i + 2] === '\n'))) {
      i += template[i + 1] === '\r' ? 2 : 1;
      out += ' ';
      continue;
    } else if (c === '\\') {
      out += c + (template[++i] ?? '');
      continue;
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && template[i + 1] === '\n') i++;
      out += ' ';
      continue;
    } else if (c === '#' && (out.length === 0 || /[\s;&|()]$/.test(out))) {
      throw new UsageError('PC_ERR_USAGE', `--qemu-cmd: a '#' comment is not allowed (line ${lineOf(template, i)}): the lines are joined into one command, so it would drop everything after it`);
    }
    out += c;
  }
  if (quote) throw new UsageError('PC_ERR_USAGE', `--qemu-cmd: unterminated ${quote === "'" ? 'single' : 'double'} quote`);
  return out.trim();
}

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split('\n').length;
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

/** The last non-empty lines of a log, joined into one line for an error message ('' if none or unreadable). */
export function lastLines(path: string): string {
  try {
    const lines = readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
    return lines.slice(-QEMU_LOG_QUOTE_LINES).join(' / ').slice(0, QEMU_LOG_QUOTE_CHARS);
  } catch {
    return '';
  }
}
