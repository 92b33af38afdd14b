// One root pino logger made at the entry point and passed down; modules take a child. Its records are JSON lines
// on stderr, or, on a terminal with a status line, readable lines handed to whoever draws that line.
import { pino, type DestinationStream, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';
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

/**
 * The root logger. With `above`, each record is formatted by pino-pretty in the caller's stack (no worker thread:
 * the record must reach the screen before the status line is drawn again) and handed over as one line; without it,
 * JSON on stderr (fd 2), written synchronously.
 */
export function createRootLogger(opts: { level?: string; name?: string; above?: (text: string) => void } = {}): Logger {
  const level = parseLogLevel(opts.level);
  const destination = opts.above ? readableLines(opts.above, level === 'debug' || level === 'trace') : pino.destination({ dest: 2, sync: true });
  return pino({ level, base: { name: opts.name ?? 'postcopy', pid: process.pid } }, destination);
}

/**
 * Records as one readable line each: time, level, message, then the other fields inline. The process's name, pid and
 * role are the command's own, said once by the prompt; an error is its type, message and code, with its stack only at
 * debug level (where it is asked for). Colour unless NO_COLOR is set (and not empty).
 */
function readableLines(above: (text: string) => void, withStack: boolean): DestinationStream {
  const format = prettyFactory({
    colorize: !process.env.NO_COLOR,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: ['pid', 'hostname', 'name', 'role', ...(withStack ? [] : ['err.stack'])].join(','),
    singleLine: true,
    errorLikeObjectKeys: withStack ? ['err'] : [],
  });
  return { write: (record: string) => above(format(record)) };
}

/** A logger that drops everything: for unit tests and library use without logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
