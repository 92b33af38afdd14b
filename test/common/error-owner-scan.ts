// Reads source text and finds every construction of one of our error classes whose code another class owns
// (CODE_OWNER), or whose code is picked at run time (that is errorFor's job). Text only: no compiler needed.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { CODE_OWNER, type ErrorCode } from '../../src/common/errors.js';

export interface OwnerViolation {
  /** `path:line` of the `new`. */
  where: string;
  what: string;
}

/** The classes CODE_OWNER names, and PostcopyError (which owns no code: constructing it is always wrong). */
const CLASSES = new Set<string>(['PostcopyError', ...Object.values(CODE_OWNER).map((c) => c.name)]);
const CODE_LITERAL = /['"`]((?:PC|NBD)_ERR_[A-Z_]+)['"`]/g;

/** Every `*.ts` file below `dir`, sorted. */
export function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out.sort();
}

/** The violations in one file's text; `name` is how the file is called in the report. */
export function scanErrorOwners(name: string, text: string): OwnerViolation[] {
  const ours = importedErrorClasses(text);
  const out: OwnerViolation[] = [];
  for (const m of text.matchAll(/\bnew\s+([A-Z][A-Za-z]*Error)\s*\(/g)) {
    const cls = m[1]!;
    if (!ours.has(cls)) continue;
    const where = `${name}:${lineOf(text, m.index!)}`;
    const arg = firstArgument(text, m.index! + m[0].length);
    const codes = [...arg.matchAll(CODE_LITERAL)].map((c) => c[1]!);
    if (codes.length === 0) {
      if (arg.trim() === '') out.push({ where, what: `new ${cls}() without a code` });
      else out.push({ where, what: `new ${cls}(${arg.trim()}, …): a code picked at run time goes through errorFor(code, …)` });
      continue;
    }
    for (const code of codes) {
      const owner = (CODE_OWNER as Record<string, { name: string } | undefined>)[code];
      if (!owner) out.push({ where, what: `${code} is not in ERROR_CODES` });
      else if (owner.name !== cls) out.push({ where, what: `new ${cls}('${code}', …): ${code} belongs to ${owner.name}` });
    }
  }
  return out;
}

/** Violations in every file below `dir` (named relative to `root`), optionally only in `only` (paths relative to root). */
export function scanTree(root: string, dir: string, only?: ReadonlySet<string>): OwnerViolation[] {
  return sourceFiles(join(root, dir))
    .map((path) => relative(root, path))
    .filter((name) => !only || only.has(name))
    .flatMap((name) => scanErrorOwners(name, readFileSync(join(root, name), 'utf8')));
}

/** Codes ERROR_CODES lists that CODE_OWNER gives no class (the type says none; this holds it at run time too). */
export function ownerlessCodes(all: readonly string[]): string[] {
  return all.filter((code) => !(code in CODE_OWNER) || typeof CODE_OWNER[code as ErrorCode] !== 'function');
}

/** Names of our error classes the file can mean: imported from common/errors (or hypervisor/errors), or errors.ts itself. */
function importedErrorClasses(text: string): Set<string> {
  const names = new Set<string>();
  if (/^export class PostcopyError\b/m.test(text)) return new Set(CLASSES);
  for (const m of text.matchAll(/import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*['"][^'"]*\/errors\.js['"]/g)) {
    for (const part of m[1]!.split(',')) {
      const name = part.trim().replace(/^type\s+/, '');
      if (CLASSES.has(name)) names.add(name); // an alias (`X as Y`) is not matched: none is used in src
    }
  }
  return names;
}

/** The text of the call's first argument, from just after `(` to the first top-level `,` or `)`. */
function firstArgument(text: string, from: number): string {
  let depth = 0;
  let quote: string | null = null;
  for (let i = from; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
    } else if (c === "'" || c === '"' || c === '`') quote = c;
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      if (depth === 0) return text.slice(from, i);
      depth--;
    } else if (c === ',' && depth === 0) return text.slice(from, i);
  }
  return text.slice(from);
}

function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}
