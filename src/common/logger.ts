// One root pino logger made at the entry point and passed down; modules take a child.
import { pino, type Logger } from 'pino';
import { UsageError } from './errors.js';

export type { Logger };

/** pino's levels: anything else is an operator mistake, said in one line (pino itself throws with a stack). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The level asked for by `--log-level` (or, without it, POSTCOPY_LOG_LEVEL), checked; info by default. */
export function parseLogLevel(option: string | undefined, env: string | undefined = process.env.POSTCOPY_LOG_LEVEL): LogLevel {
  const [text, what] = option !== undefined ? [option, '--log-level'] : env ? [env, 'POSTCOPY_LOG_LEVEL'] : ['info', 'default'];
  const level = LOG_LEVELS.find((l) => l === text.toLowerCase());
  if (!level) throw new UsageError('PC_ERR_USAGE', `${what}: '${text}' is not a log level (one of ${LOG_LEVELS.join(', ')})`);
  return level;
}

export function createRootLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    { level: parseLogLevel(opts.level), base: { name: opts.name ?? 'postcopy', pid: process.pid } },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything: for unit tests and library use without logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
