// Command-line parsing shared by the subcommands: node's parseArgs, with its errors turned into one-line usage errors.
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../common/errors.js';
import { parseTicket, type Ticket } from '../protocol/handshake.js';

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseCommandArgs<O extends Options>(argv: string[], options: O): { values: Record<string, string | boolean | undefined> } {
  try {
    const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
    return { values: values as Record<string, string | boolean | undefined> };
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', (e as Error).message);
  }
}

/** Options both agents take: the ticket, the state dir, events, logs and mutual TLS. */
export const AGENT_OPTIONS = {
  'ticket-file': { type: 'string' },
  'state-dir': { type: 'string' },
  events: { type: 'string' },
  'log-level': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
} as const;

export function required(values: Record<string, string | boolean | undefined>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError('PC_ERR_USAGE', `--${name} is required`);
  return v;
}

export function optional(values: Record<string, string | boolean | undefined>, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function readTicket(path: string): Ticket {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `cannot read ticket file ${path}: ${(e as Error).message}`);
  }
  return parseTicket(text);
}
