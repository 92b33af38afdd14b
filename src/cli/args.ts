// Command-line parsing shared by the subcommands: node's parseArgs, with its errors turned into one-line usage errors.
import { readFileSync, statSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { PROGRESS_IDLE_SAMPLES } from '../common/constants.js';
import { UsageError } from '../common/errors.js';
import { parseTicket, type Ticket } from '../protocol/handshake.js';
import { DEFAULT_PROGRESS_INTERVAL_MS, PROGRESS_QUIET_LINE_MS } from './constants.js';
import { parseIntArg } from './sizes.js';

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseCommandArgs<O extends Options>(argv: string[], options: O): { values: Record<string, string | boolean | undefined> } {
  try {
    const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
    return { values: values as Record<string, string | boolean | undefined> };
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', (e as Error).message);
  }
}

/** Options both agents take: the ticket, the state dir, events, progress, logs and mutual TLS. */
export const AGENT_OPTIONS = {
  'ticket-file': { type: 'string' },
  'state-dir': { type: 'string' },
  events: { type: 'string' },
  progress: { type: 'boolean' },
  'progress-interval': { type: 'string' },
  'log-level': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
} as const;

/** Both agents' help for --progress-interval and --progress. */
export const PROGRESS_HELP = `  --progress-interval MS  how often progress is sampled and the bar redrawn; a progress event is written
                          when it moved, else every ${PROGRESS_IDLE_SAMPLES}th sample (10..3600000, default ${DEFAULT_PROGRESS_INTERVAL_MS})
  --progress              off a terminal: a plain progress line on stderr per step (each whole percent,
                          phase, link change or RAM round, at least every ${PROGRESS_QUIET_LINE_MS / 1000} s when nothing moves, and
                          the final state), among the JSON logs (programs should read --events). On a
                          terminal the bar is drawn without it, except with CI=true: --progress draws it then`;

/** --progress-interval, checked: how often each agent samples its progress. */
export function progressInterval(values: Record<string, string | boolean | undefined>): number {
  return parseIntArg(optional(values, 'progress-interval') ?? String(DEFAULT_PROGRESS_INTERVAL_MS), '--progress-interval', 10, 3_600_000);
}

export function required(values: Record<string, string | boolean | undefined>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError('PC_ERR_USAGE', `--${name} is required`);
  return v;
}

export function optional(values: Record<string, string | boolean | undefined>, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/** Read and parse the ticket; one warning line (as ssh gives for a key) when group or others may read it. */
export function readTicket(path: string, warn: (line: string) => void = (line) => process.stderr.write(line + '\n')): Ticket {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(path, 'utf8');
    mode = statSync(path).mode & 0o777;
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `cannot read ticket file ${path}: ${(e as Error).message}`);
  }
  const ticket = parseTicket(text);
  if ((mode & 0o077) !== 0) {
    const octal = mode.toString(8).padStart(4, '0');
    warn(`postcopy: warning: ticket file ${path} is open to group or others (mode ${octal}); whoever can read it can act as the source: chmod 600 ${path}`);
  }
  return ticket;
}
