// D's session record on a real state dir: forgetting it removes the record only (nothing resumes the session),
// while the rest of the state dir is left for the operator.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { forgetSession, saveSession, SESSION_FILE } from '../../src/dest/dest-session.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('forgetSession', () => {
  it('removes the session record and nothing else; forgetting twice is harmless', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-forget-'));
    dirs.push(dir);
    saveSession(dir, { sessionId: 's1', resumeKey: 'k'.repeat(64), phase: 'postcopy', size: 1 << 20, blockSize: 65536, imagePath: '/x/img', image: { created: true, identity: { dev: 1, ino: 2 }, priorSize: 0 }, stateDirCreated: false } as never);
    writeFileSync(join(dir, 'other'), 'kept');
    expect(existsSync(join(dir, SESSION_FILE))).toBe(true);
    expect(forgetSession(dir)).toBeNull();
    expect(existsSync(join(dir, SESSION_FILE))).toBe(false);
    expect(existsSync(join(dir, 'other'))).toBe(true);
    expect(forgetSession(dir)).toBeNull();
  });

  it('reports, not throws, when the record cannot be removed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-forget-'));
    dirs.push(dir);
    // A directory where the record should be: rm without recursive refuses it.
    const blocker = join(dir, SESSION_FILE);
    mkdirSync(blocker);
    writeFileSync(join(blocker, 'x'), '');
    expect(forgetSession(dir)).toBeInstanceOf(Error);
  });
});
