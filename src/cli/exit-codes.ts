// Exit codes of the postcopy command, documented in the README and in --help.
export const EXIT = {
  OK: 0,
  /** Unexpected internal error. */
  INTERNAL: 1,
  /** Bad command line or configuration. */
  USAGE: 2,
  /** Rolled back before cut-over: the guest runs on the source; the destination kept nothing. */
  ROLLED_BACK: 3,
  /** Could not start: the peer was unreachable or refused us; nothing was started on either side. */
  NOT_STARTED: 4,
  /** Stopped after cut-over with the migration unfinished: state kept; restart with the same state dir to resume. */
  INTERRUPTED: 5,
  /** Verification found a mismatch. */
  VERIFY_FAILED: 6,
} as const;

export const EXIT_HELP = `Exit codes:
  0  done
  1  unexpected internal error
  2  bad command line or configuration
  3  rolled back (or stopped by Ctrl-C/SIGTERM) before cut-over: the guest runs on the source, the destination kept nothing
  4  could not start: peer unreachable or authentication refused; nothing started on either side
  5  stopped after cut-over with the migration unfinished: state kept; restart with the same --state-dir to resume
  6  verification found a mismatch`;
