// One root pino logger made at the entry point and passed down; modules take a child.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createRootLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    { level: opts.level ?? process.env.POSTCOPY_LOG_LEVEL ?? 'info', base: { name: opts.name ?? 'postcopy', pid: process.pid } },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything: for unit tests and library use without logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
