// How a command's failure reaches the operator: one exit code and one line on stderr (the stack only at debug level).
import { UsageError, isPostcopyError } from '../common/errors.js';
import { EXIT } from './exit-codes.js';

/**
 * The exit code of a command that ended by throwing `e` (the dest and source commands' own outcomes aside). Every
 * operator-mistake code (usage, state dir, image exists, same image) is a UsageError's (CODE_OWNER), so the class says it.
 */
export function exitCodeFor(cmd: string, e: unknown): number {
  if (e instanceof UsageError) return EXIT.USAGE;
  if (isPostcopyError(e)) return cmd === 'source' || cmd === 'dest' ? EXIT.NOT_STARTED : EXIT.INTERNAL;
  return EXIT.INTERNAL;
}

/** The line for stderr: a mistake says what and how to proceed; a bug says so, with its stack only if asked. */
export function failureLine(cmd: string, e: unknown, withStack: boolean): string {
  if (isPostcopyError(e)) return `postcopy ${cmd}: ${e.message} [${e.code}]\n`;
  const msg = e instanceof Error ? e.message : String(e);
  if (withStack && e instanceof Error && e.stack) return `postcopy ${cmd}: internal error: ${e.stack}\n`;
  return `postcopy ${cmd}: internal error: ${msg.split('\n')[0]} (run with --log-level debug for the stack)\n`;
}

/** Whether the command line (or POSTCOPY_LOG_LEVEL) asks for debug output; never throws on a bad level. */
export function wantsStack(argv: string[]): boolean {
  let level = process.env.POSTCOPY_LOG_LEVEL;
  argv.forEach((a, i) => {
    if (a === '--log-level') level = argv[i + 1];
    else if (a.startsWith('--log-level=')) level = a.slice('--log-level='.length);
  });
  return level === 'debug' || level === 'trace';
}
