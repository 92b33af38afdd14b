// What a directory tree holds (type, mode, owner, size, content hash, mtime, link target of every entry), to prove
// a command changed nothing that existed before it and created only what it may.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect } from 'vitest';

export type TreeSnapshot = Map<string, string>;

/** Every entry under `root` by relative path, except those `skip` names (files the command under test writes). */
export function snapshotTree(root: string, skip: (rel: string) => boolean = () => false): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (skip(relative(root, path))) continue;
      const st = lstatSync(path);
      const common = `mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid}`;
      let what: string;
      if (st.isDirectory()) what = `dir ${common}`;
      else if (st.isFile()) {
        const hash = createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
        what = `file ${common} size=${st.size} sha256=${hash} mtime=${st.mtimeMs}`;
      } else if (st.isSymbolicLink()) what = `symlink -> ${readlinkSync(path)}`;
      else what = `${st.isSocket() ? 'socket' : 'other'} ${common}`;
      out.set(relative(root, path), what);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(root);
  return out;
}

/** Every way `after` differs from `before`, one line each: changed, deleted, or created without leave. */
export function treeChanges(before: TreeSnapshot, after: TreeSnapshot, mayCreate: readonly string[] = []): string[] {
  const changes: string[] = [];
  for (const [path, was] of before) {
    const now = after.get(path);
    if (now === undefined) changes.push(`deleted ${path} (was ${was})`);
    else if (now !== was) changes.push(`changed ${path}: ${was} -> ${now}`);
  }
  for (const [path, now] of after) {
    if (!before.has(path) && !mayCreate.includes(path)) changes.push(`created ${path} (${now})`);
  }
  return changes;
}

/** Nothing under the snapshot's root was changed, deleted or created. */
export function expectUnchanged(before: TreeSnapshot, after: TreeSnapshot, context = ''): void {
  expect(treeChanges(before, after), context).toEqual([]);
}
