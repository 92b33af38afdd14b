// What an operator's files look like before and after a command: every path under a directory with its
// type, mode, size and content hash, so a test can say "nothing that existed before changed".
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect } from 'vitest';

export interface FileFacts {
  kind: 'file' | 'dir' | 'symlink';
  mode: string;
  size: number;
  sha256: string;
}

/** Every path under `root` (relative), except names matched by `skip`. */
export function snapshotTree(root: string, skip: (name: string) => boolean = () => false): Map<string, FileFacts> {
  const out = new Map<string, FileFacts>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      if (skip(name)) continue;
      const path = join(dir, name);
      const st = lstatSync(path);
      const mode = (st.mode & 0o7777).toString(8);
      const rel = relative(root, path);
      if (st.isSymbolicLink()) out.set(rel, { kind: 'symlink', mode, size: st.size, sha256: readlinkSync(path) });
      else if (st.isDirectory()) {
        out.set(rel, { kind: 'dir', mode, size: 0, sha256: '' });
        walk(path);
      } else out.set(rel, { kind: 'file', mode, size: st.size, sha256: createHash('sha256').update(readFileSync(path)).digest('hex') });
    }
  };
  walk(root);
  return out;
}

/** Nothing under the snapshot's root was added, removed or changed (content, size, mode). */
export function expectUnchanged(before: Map<string, FileFacts>, after: Map<string, FileFacts>, context = ''): void {
  expect(Object.fromEntries(after), context).toEqual(Object.fromEntries(before));
}

/** The operator-facing lines of an agent's stderr: everything but its JSON log records. */
export function humanLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim().length > 0 && !l.startsWith('{'));
}

/** A refusal: exactly one human line, naming `code`, with no stack trace. */
export function expectOneLineRefusal(stderr: string, code: string): void {
  const lines = humanLines(stderr);
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0], stderr).toContain(code);
  expect(stderr).not.toMatch(/\n\s+at /);
}
