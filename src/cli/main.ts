#!/usr/bin/env -S node --max-semi-space-size=2
// The `postcopy` command: dispatches to dest, source, demo, verify, the service and its clients; turns failures into one line and an exit code.
import { readFileSync } from 'node:fs';
import { UsageError } from '../common/errors.js';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from '../protocol/constants.js';
import { EXIT_GRACE_MS } from './constants.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { exitCodeFor, failureLine, wantsStack } from './failure.js';
import { writeLastLines } from './terminal.js';

const HELP = `Usage: postcopy <command> [options]

Post-copy live migration of a guest and its disk over one socket.

Commands:
  dest     listen for a source, take over its guest, pull its disk (optionally serving it as an NBD export)
  source   hand the guest over to a destination and serve its disk until the destination is complete
  demo     the whole job on an embedded default: two processes, a simulated guest, verification, summary
  verify   check a destination image against the source image (and the guest's writes)

The host service (many migrations per host, as jobs; see 'Running as a service' in the README):
  serve      run the service: one migration port, a control API on a Unix socket, metrics
  submit     submit a job: 'postcopy submit source|dest' with the standalone command's flags
  jobs       list the jobs
  status     one job's status ('--watch' follows it to its end)
  abort      abort a job (queued, or before cut-over; refused after it, with the reason)
  set-speed  cap a job's bulk rate, live ('none' lifts it)

Run 'postcopy <command> --help' for its options; 'postcopy --version' prints the version.

${EXIT_HELP}`;

type Command = (argv: string[]) => Promise<number>;
/** Each command's modules load only when it runs: a source starts without the destination's code (start-up time). */
const COMMANDS: Record<string, () => Promise<Command>> = {
  dest: async () => (await import('./dest-command.js')).runDest,
  source: async () => (await import('./source-command.js')).runSource,
  demo: async () => (await import('./demo-command.js')).runDemo,
  verify: async () => (await import('./verify-command.js')).runVerify,
  serve: async () => (await import('./serve-command.js')).runServe,
  submit: async () => (await import('./client-commands.js')).runSubmit,
  jobs: async () => (await import('./client-commands.js')).runJobs,
  status: async () => (await import('./client-commands.js')).runStatus,
  abort: async () => (await import('./client-commands.js')).runAbort,
  'set-speed': async () => (await import('./client-commands.js')).runSetSpeed,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP + '\n');
    return cmd ? EXIT.OK : EXIT.USAGE;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    // The wire versions too: two hosts on different releases interoperate when their ranges overlap.
    process.stdout.write(`postcopy ${packageVersion()} (migration protocol ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION_MAX})\n`);
    return EXIT.OK;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    process.stderr.write(`postcopy: unknown command '${cmd}' (try 'postcopy --help')\n`);
    return EXIT.USAGE;
  }
  const fail = (e: unknown): number => {
    writeLastLines(failureLine(cmd, e, wantsStack(rest)));
    return exitCodeFor(cmd, e);
  };
  // Whatever escapes from a callback ends as one line too; it may come mid-migration, so only a mistake is not a bug.
  const crash = (e: unknown): never => {
    writeLastLines(failureLine(cmd, e, wantsStack(rest)));
    process.exit(e instanceof UsageError ? EXIT.USAGE : EXIT.INTERNAL);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  try {
    return await (await load())(rest);
  } catch (e) {
    return fail(e);
  }
}

/** The version as released: package.json sits two levels above dist/cli/ in the repo and in the installed package. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Agents leave no work behind on success; anything still pending (a socket's close timer) must not hold the exit.
    setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
  },
  (e) => {
    process.stderr.write(`postcopy: ${String(e)}\n`);
    process.exit(EXIT.INTERNAL);
  },
);
