// A state dir holds the resume key and image data: only its owner may be able to put or replace files in it.
// A dir made by another user (the default names IMAGE.state / IMAGE.source-state are predictable) or one that
// group/others can write could hold planted files and symlinks: refused, never chmodded or used as found.
import { lstatSync, statSync } from 'node:fs';
import { UsageError } from './errors.js';

/** Refuse an existing `dir` we do not own or that group/others may write; nothing when `dir` does not exist. */
export function checkPrivateDir(dir: string, what = '--state-dir'): void {
  const link = lstatSync(dir, { throwIfNoEntry: false });
  if (!link) return;
  const euid = process.geteuid?.() ?? 0;
  const fix = `give another --state-dir, or make it yours (chown ${euid} ${dir}; chmod 700 ${dir}) if you trust what is in it`;
  if (link.isSymbolicLink() && link.uid !== euid) {
    throw refuse(`${what} ${dir} is a symlink owned by uid ${link.uid}, not by this user (uid ${euid}); it is left alone: ${fix}`);
  }
  const st = link.isSymbolicLink() ? statSync(dir, { throwIfNoEntry: false }) : link;
  if (!st || !st.isDirectory()) return; // the caller says what is wrong with a non-directory
  if (st.uid !== euid) {
    throw refuse(`${what} ${dir} is owned by uid ${st.uid}, not by this user (uid ${euid}); it is left alone: ${fix}`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw refuse(`${what} ${dir} is writable by ${st.mode & 0o002 ? 'others' : 'its group'} (mode ${(st.mode & 0o777).toString(8)}); it is left alone: chmod 700 ${dir}, or give another --state-dir`);
  }
}

function refuse(detail: string): UsageError {
  return new UsageError('PC_ERR_STATE_DIR', detail);
}
