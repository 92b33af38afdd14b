// D's record of its migration in --state-dir, and the check at start that the state dir and --image belong
// together: D resumes only its own session on its own image, never reuses a finished or rolled-back state,
// never writes over a file that is not its own unless told to (--force), and undoes only what it created.
import { existsSync, lstatSync, rmSync, rmdirSync, statSync, truncateSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError } from '../common/errors.js';
import { describeIdentity, pathIdentity, sameFile } from '../common/image-identity.js';
import { checkPrivateDir } from '../common/private-dir.js';
import { readStateFile, statePath, writeStateFile } from '../common/state-file.js';
import type { ImageFile } from './block-store.js';
import type { DestPhase } from './dest-core-types.js';

export const SESSION_FILE = 'dest-session.json';
export const BITMAP_FILE = 'present.bitmap';
const SESSION_KIND = 'postcopy-dest-session/2';
/** Files of a source's state dir: a destination given one refuses it. */
const SOURCE_SESSION_FILE = 'source-session.json';

export interface SavedSession {
  kind: typeof SESSION_KIND;
  sessionId: string;
  resumeKey: string;
  phase: DestPhase;
  size: number;
  blockSize: number;
  /** Absolute path of the image. */
  imagePath: string;
  /** The image as this session created or took it; null until Prepare opened it. */
  image: ImageFile | null;
  /** This session created the state dir (a rollback removes it once empty). */
  stateDirCreated: boolean;
}

/** What a start does: a new migration (and whether a file already at --image may be used), or continue a saved one. */
export type StartPlan =
  | { kind: 'new'; existing: 'never' | 'empty' | 'overwrite' }
  | { kind: 'resume'; saved: SavedSession }
  | { kind: 'rollback'; saved: SavedSession };

function sessionPath(stateDir: string): string {
  return statePath(stateDir, SESSION_FILE);
}

export function saveSession(stateDir: string, s: Omit<SavedSession, 'kind'>): void {
  writeStateFile(sessionPath(stateDir), { kind: SESSION_KIND, ...s });
}

/** Decide, before listening, what this start may do with --state-dir and --image; a mismatch is one UsageError line. */
export function planStart(o: { imagePath: string; stateDir: string; force: boolean }): StartPlan {
  const { stateDir } = o;
  const imagePath = resolve(o.imagePath);
  const dirStat = statSync(stateDir, { throwIfNoEntry: false });
  if (dirStat && !dirStat.isDirectory()) throw stateDirError(`${stateDir} is not a directory; give --state-dir a directory`);
  // Before reading anything in it: a session file planted by another user must never steer what D deletes.
  checkPrivateDir(stateDir);
  const saved = dirStat ? readSession(stateDir) : null;
  if (!saved) {
    if (dirStat && existsSync(statePath(stateDir, SOURCE_SESSION_FILE))) {
      throw stateDirError(`${stateDir} is a source's state directory (${SOURCE_SESSION_FILE}); give the destination its own --state-dir`);
    }
    return { kind: 'new', existing: checkNewImage(imagePath, o.force) };
  }
  const what = `${stateDir} holds session ${saved.sessionId} (phase ${saved.phase})`;
  if (saved.imagePath !== imagePath) {
    throw stateDirError(`${what} of image ${saved.imagePath}, not ${imagePath}: give --image ${saved.imagePath} to continue it, or another --state-dir for ${imagePath}`);
  }
  switch (saved.phase) {
    case 'confirmed':
      throw stateDirError(`${what}: that migration finished and was confirmed, there is nothing to resume; to migrate into ${imagePath} again remove ${stateDir} (and the image) or give another --state-dir`);
    case 'aborted':
      throw stateDirError(`${what}: that migration was rolled back and nothing of it is kept; remove ${stateDir} or give another --state-dir to start a new one`);
    case 'postcopy':
    case 'complete':
      checkOwnImage(imagePath, saved, what);
      checkBitmap(stateDir, what);
      return { kind: 'resume', saved };
    default:
      return { kind: 'rollback', saved };
  }
}

/** Undo what a session did to its image before cut-over: remove it if the session created it, else give back its size. */
export function discardImage(imagePath: string, file: ImageFile | null, size: number): void {
  if (!file || !sameFile(pathIdentity(imagePath), file.identity)) return; // gone, or not the file this session used
  if (file.created) rmSync(imagePath, { force: true });
  else if (file.priorSize < size) truncateSync(imagePath, file.priorSize);
}

/** Remove only the session record (its phase and keys), so nothing resumes it; the error when it could not go, else null. */
export function forgetSession(stateDir: string): Error | null {
  try {
    rmSync(statePath(stateDir, SESSION_FILE), { force: true });
    return null;
  } catch (e) {
    return e as Error;
  }
}

/**
 * Remove the session's own files from the state dir, and the dir itself when this session made it and it is now
 * empty. Each file is tried (one that cannot go does not keep the others); returns the errors for the caller to log.
 */
export function removeSessionFiles(stateDir: string, stateDirCreated: boolean): Error[] {
  const failed: Error[] = [];
  for (const name of [SESSION_FILE, `${SESSION_FILE}.tmp`, BITMAP_FILE]) {
    try {
      rmSync(statePath(stateDir, name), { force: true });
    } catch (e) {
      failed.push(e as Error);
    }
  }
  removeDirIfEmpty(stateDir, stateDirCreated);
  return failed;
}

export function removeDirIfEmpty(dir: string, created: boolean): void {
  if (!created) return;
  try {
    rmdirSync(dir);
  } catch {
    // Not empty (the operator's files, a serial log) or already gone: leave it.
  }
}

function readSession(stateDir: string): SavedSession | null {
  const path = sessionPath(stateDir);
  const saved = readStateFile<Partial<SavedSession>>(path);
  if (!saved) return null;
  if (saved.kind !== SESSION_KIND || typeof saved.sessionId !== 'string' || typeof saved.imagePath !== 'string' || typeof saved.size !== 'number') {
    throw stateDirError(`${path} is not a destination session of this version (kind ${JSON.stringify(saved.kind ?? null)}); remove ${stateDir} or give another --state-dir`);
  }
  return saved as SavedSession;
}

/** A new migration: the image must not exist, or be empty, unless --force says to overwrite it. */
function checkNewImage(imagePath: string, force: boolean): 'never' | 'empty' | 'overwrite' {
  const st = statSync(imagePath, { throwIfNoEntry: false });
  if (!st) return 'never';
  if (!st.isFile()) throw new UsageError('PC_ERR_USAGE', `--image ${imagePath} exists and is not a regular file; give the path of a new image file`);
  if (st.size === 0) return 'empty';
  if (force) return 'overwrite';
  throw new UsageError(
    'PC_ERR_IMAGE_EXISTS',
    `--image ${imagePath} holds ${st.size} bytes and no session in the state dir owns it; give a new path, or --force to overwrite it`,
  );
}

/** After cut-over the image holds the guest's only disk here: it must be the very file this session created. */
function checkOwnImage(imagePath: string, saved: SavedSession, what: string): void {
  const st = statSync(imagePath, { bigint: true, throwIfNoEntry: false });
  const ours = saved.image;
  if (!ours) throw stateDirError(`${what} but records no image; it is damaged: the guest's disk blocks it lacks exist only on the source`);
  const expected = `${describeIdentity(ours.identity)}, ${saved.size} bytes`;
  if (!st) throw stateDirError(`${what} but ${imagePath} is missing (expected ${expected}); put the session's image back at that path and restart`);
  const found = { dev: st.dev.toString(), ino: st.ino.toString() };
  if (!sameFile(found, ours.identity)) {
    throw stateDirError(`${what} but ${imagePath} is another file (${describeIdentity(found)}; expected ${expected}); put the session's image back at that path and restart`);
  }
  if (Number(st.size) !== saved.size) {
    throw stateDirError(`${what} but ${imagePath} is now ${st.size} bytes (expected ${saved.size}): something else changed it; it was left alone, and the session cannot continue on it`);
  }
}

/** After cut-over the bitmap is the only record of which blocks the image holds: without it D cannot go on. */
function checkBitmap(stateDir: string, what: string): void {
  const path = statePath(stateDir, BITMAP_FILE);
  const st = lstatSync(path, { throwIfNoEntry: false });
  const lost = 'D cannot tell which blocks of the image it already holds, so the session cannot continue; the image was left alone';
  if (!st) throw stateDirError(`${what} but its ${path} is missing: ${lost}; put the file back and restart`);
  if (!st.isFile()) throw stateDirError(`${what} but its ${path} is not a regular file (${st.isSymbolicLink() ? 'a symlink' : 'another kind of file'}): ${lost}; put the session's own bitmap back and restart`);
}

function stateDirError(detail: string): UsageError {
  return new UsageError('PC_ERR_STATE_DIR', detail);
}
