// Small JSON state files that survive a crash: written to a temporary name, fsync'd, renamed over, directory fsync'd.
// Everything here may hold a secret (the resume key) or image data: files are 0600 and directories 0700 whatever
// the umask (set with fchmod/chmod after creation, since the umask only ever removes bits). Nothing here follows a
// symlink: a link planted in a state dir is refused or replaced, never written through.
import { chmodSync, closeSync, constants, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from './constants.js';
import { UsageError } from './errors.js';
import { checkPrivateDir } from './private-dir.js';

/** Open (and maybe create) a file only its owner can read: a file this call creates is 0600 whatever the umask. */
export function openPrivate(path: string, flags: string | number): number {
  const fd = openSync(path, flags, PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

/**
 * A new private file at `path`, opened read-write: whatever was there (a stale file of ours, a planted symlink) is
 * unlinked first, and O_EXCL|O_NOFOLLOW make sure the file opened is the one this call created.
 */
export function createPrivateFile(path: string): number {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return openPrivate(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW);
}

export function writeStateFile(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  const fd = createPrivateFile(tmp);
  try {
    writeSync(fd, JSON.stringify(value, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

export function readStateFile<T>(path: string): T | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new UsageError('PC_ERR_STATE_DIR', `${path} is a symlink, not a state file; it is left alone: remove it or give another --state-dir`);
    throw e;
  }
  try {
    return JSON.parse(readFileSync(fd, 'utf8')) as T;
  } catch (e) {
    throw new UsageError('PC_ERR_STATE_DIR', `${path} is not valid JSON`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Make `dir` (and missing parents) 0700; true when this call created `dir` itself. One that existed must be private. */
export function ensureDir(dir: string): boolean {
  const created = mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  if (created === undefined) {
    checkPrivateDir(dir); // it may have appeared since the check at start
    return false;
  }
  // Every directory from the first one made down to `dir` is new: make each 0700 (the umask masked the mode).
  const first = resolve(created);
  for (let d = resolve(dir); d.startsWith(first); d = dirname(d)) {
    chmodSync(d, PRIVATE_DIR_MODE);
    if (d === first) break;
  }
  return true;
}

export function statePath(dir: string, name: string): string {
  return join(dir, name);
}
