// Small JSON state files that survive a crash: written to a temporary name, fsync'd, renamed over, directory fsync'd.
// Everything here may hold a secret (the resume key) or image data: files are 0600 and directories 0700 whatever
// the umask (set with fchmod/chmod after creation, since the umask only ever removes bits).
import { chmodSync, closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { UsageError } from './errors.js';

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

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

export function writeStateFile(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  const fd = openPrivate(tmp, 'w');
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
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    throw new UsageError('PC_ERR_STATE_DIR', `${path} is not valid JSON`, { cause: e });
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

/** Make `dir` (and missing parents) 0700; true when this call created `dir` itself. */
export function ensureDir(dir: string): boolean {
  const created = mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  if (created === undefined) return false;
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
