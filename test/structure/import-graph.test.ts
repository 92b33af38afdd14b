// The import graph as DESIGN.md §2 draws it: runs dependency-cruiser with .dependency-cruiser.cjs over src and
// bench (the same check as `npm run lint:deps`) and fails listing every cycle and upward arrow it finds.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

interface Violation {
  rule: { name: string; severity: 'error' | 'warn' | 'info' | 'ignore' };
  from: string;
  to: string;
  cycle?: { name: string }[];
  comment?: string;
}
interface CruiseSummary {
  violations: Violation[];
  ruleSetUsed: { forbidden: { name: string; comment?: string }[] };
}

const ROOT = join(dirname(new URL(import.meta.url).pathname), '..', '..');
const CLI = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

/** One line per violation: the rule, the edge or the whole cycle, and the rule's reason. */
function describeViolation(v: Violation, comments: Map<string, string>): string {
  const path = v.cycle?.length ? [v.from, ...v.cycle.map((c) => c.name)].join(' → ') : `${v.from} → ${v.to}`;
  return `${v.rule.name}: ${path}\n    (${comments.get(v.rule.name) ?? ''})`;
}

describe('import graph (DESIGN.md §2)', () => {
  it('has no cycle and no arrow pointing up', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [CLI, 'src', 'bench', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'],
      { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
    ).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
    const summary = (JSON.parse(stdout) as { summary: CruiseSummary }).summary;
    const comments = new Map(summary.ruleSetUsed.forbidden.map((r) => [r.name, r.comment ?? '']));
    const known = summary.violations.filter((v) => v.rule.severity === 'warn');
    for (const v of known) console.warn(`known exception, ${describeViolation(v, comments)}`);
    const errors = summary.violations.filter((v) => v.rule.severity === 'error').map((v) => describeViolation(v, comments));
    expect(errors, `import graph violations:\n${errors.join('\n')}`).toEqual([]);
  });
});
