// systemd socket activation (sd_listen_fds(3)): the listening sockets systemd opened for us, by the names the socket
// unit gave them (FileDescriptorName=), read once from LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES.
import { fstatSync } from 'node:fs';
import { UsageError } from '../common/errors.js';

/** The first fd systemd passes (after stdin, stdout, stderr): SD_LISTEN_FDS_START. */
export const SD_LISTEN_FDS_START = 3;
/** The name sd_listen_fds_with_names gives an fd the unit did not name. */
export const SD_UNNAMED_FD = 'unknown';

/** The names our socket units give their fds (FileDescriptorName=, see systemd/): what the service asks fdNamed for. */
export const FD_NAMES = {
  migration: 'migration',
  control: 'control',
  metrics: 'metrics',
} as const;

export interface ActivatedSocket {
  fd: number;
  name: string;
}

/**
 * The sockets passed to this process, or none when it was not socket-activated (LISTEN_PID unset or another
 * process's: a child must not take its parent's). The variables are removed after reading, as sd_listen_fds does,
 * so no child we start takes the sockets for its own. Malformed values are a UsageError (the unit is wrong).
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): ActivatedSocket[] {
  try {
    if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return [];
    const count = env.LISTEN_FDS ?? '';
    if (!/^[0-9]+$/.test(count)) throw new UsageError('PC_ERR_USAGE', `LISTEN_FDS must be a count, got '${count}'`);
    const n = Number(count);
    const names = env.LISTEN_FDNAMES === undefined ? Array<string>(n).fill(SD_UNNAMED_FD) : env.LISTEN_FDNAMES.split(':');
    if (names.length !== n) throw new UsageError('PC_ERR_USAGE', `LISTEN_FDNAMES names ${names.length} sockets, LISTEN_FDS says ${n}`);
    return names.map((name, i) => {
      const fd = SD_LISTEN_FDS_START + i;
      if (!isSocket(fd)) throw new UsageError('PC_ERR_USAGE', `fd ${fd} ('${name}') passed by systemd is not a socket`);
      return { fd, name };
    });
  } finally {
    delete env.LISTEN_PID;
    delete env.LISTEN_FDS;
    delete env.LISTEN_FDNAMES;
  }
}

/** The fd named `name`, if systemd passed one; two of that name is a unit that cannot mean one of them. */
export function fdNamed(sockets: readonly ActivatedSocket[], name: string): number | undefined {
  const found = sockets.filter((s) => s.name === name);
  if (found.length > 1) throw new UsageError('PC_ERR_USAGE', `systemd passed ${found.length} sockets named '${name}'; name each one once`);
  return found[0]?.fd;
}

function isSocket(fd: number): boolean {
  try {
    return fstatSync(fd).isSocket();
  } catch {
    return false;
  }
}
