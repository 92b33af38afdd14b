// A pino logger whose lines land in an array, so tests can assert what was logged.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export function captureLogger(level = 'debug'): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  // The sink calls back at once, so every line is in `lines` by the time the log call returns.
  return { log: pino({ level }, sink), lines };
}
