// S's state dir: what a restarted source needs to resume its session after cut-over (session id, resume key),
// and whose session it is (image, size, identity), so a dir left by another migration is never reused.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { UsageError } from '../common/errors.js';
import { withoutNbdScheme } from '../nbd/uri.js';
import { checkPrivateDir } from '../common/private-dir.js';
import { ensureDir, readStateFile, statePath, writeStateFile } from '../common/state-file.js';

const SESSION_FILE = 'source-session.json';

export interface SavedSourceSession {
  sessionId: string;
  resumeKey: string;
  phase: string;
  size: number;
  /** The image this session migrates: an absolute path or the NBD URI. */
  image?: string;
  /** A file image's device and inode, so a different file at the same path is not taken for it. */
  identity?: { dev: number; ino: number };
}

/**
 * The default state dir. A file's is beside it, named so it cannot be a destination's (IMAGE.state) for any
 * image; an NBD export has no place beside it, so it goes under the user's state home, named by the URI.
 */
export function defaultSourceStateDir(image: string, isNbd: boolean): string {
  if (!isNbd) return `${resolve(image)}.source-state`;
  const home = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  const readable = withoutNbdScheme(image).replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 64);
  const hash = createHash('sha256').update(image).digest('hex').slice(0, 8);
  return join(home, 'postcopy', 'source', `${readable}-${hash}`);
}

/** A file image's identity as the state records it (an NBD export has none beyond its URI). */
export function imageIdentity(image: string, isNbd: boolean): { image: string; identity?: { dev: number; ino: number } } {
  if (isNbd) return { image };
  const st = statSync(image);
  return { image: resolve(image), identity: { dev: st.dev, ino: st.ino } };
}

export class SourceStateDir {
  readonly dir: string;
  readonly #isDefault: boolean;
  #created = false;

  constructor(dir: string, isDefault: boolean) {
    this.dir = resolve(dir);
    this.#isDefault = isDefault;
  }

  get #file(): string {
    return statePath(this.dir, SESSION_FILE);
  }

  /**
   * The session to resume, or null for a fresh start. A session of another image, or of this image at another
   * size, is refused with what was found (exit 2): it may be the only way to finish that other migration.
   */
  load(current: { image?: string; size: number; identity?: { dev: number; ino: number } }): SavedSourceSession | null {
    // Before anything is read from it or written to it: a dir another user made or may write is refused (exit 2).
    checkPrivateDir(this.dir, this.#isDefault ? 'state dir (default for this image)' : '--state-dir');
    const saved = readStateFile<SavedSourceSession>(this.#file);
    if (!saved || (saved.phase !== 'postcopy' && saved.phase !== 'awaiting-finish')) return null;
    const what = `${this.dir} holds session ${saved.sessionId} (${saved.phase}) of ${saved.image ?? 'an image'} (${saved.size} bytes)`;
    const fix = 'resume that migration with its own image, or give this one another --state-dir';
    // A file is known by its device and inode (another path to it is the same image); an NBD export by its URI.
    if (saved.identity && current.identity) {
      if (saved.identity.dev !== current.identity.dev || saved.identity.ino !== current.identity.ino) {
        throw new UsageError('PC_ERR_STATE_DIR', `${what}, and ${current.image} is another file (device/inode differ); ${fix}`);
      }
    } else if (saved.image !== undefined && current.image !== undefined && saved.image !== current.image) {
      throw new UsageError('PC_ERR_STATE_DIR', `${what}, not of ${current.image}; ${fix}`);
    }
    if (saved.size !== current.size) throw new UsageError('PC_ERR_STATE_DIR', `${what}, but the image is now ${current.size} bytes; ${fix}`);
    return saved;
  }

  save(session: SavedSourceSession): void {
    // It holds the session's resume key: a dir made here is 0700; one that existed was checked by load() and is
    // left with its mode (it is the operator's).
    if (ensureDir(this.dir)) this.#created = true;
    writeStateFile(this.#file, session);
  }

  /** Nothing left to resume (confirmed or rolled back): the session file goes, and the dir if it is ours and empty. */
  remove(): void {
    rmSync(this.#file, { force: true });
    if (!(this.#created || this.#isDefault) || !existsSync(this.dir)) return;
    try {
      if (readdirSync(this.dir).length === 0) rmdirSync(this.dir);
    } catch {
      // Someone else's file appeared in it: leave it.
    }
  }
}
