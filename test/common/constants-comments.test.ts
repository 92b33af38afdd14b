// Every constant in a constants file says why it has its value (COMMON rule; STYLE.md 3): a doc comment above
// it, a comment closing its line, or a group comment above a block of constants with no blank line between.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** The constants files of src/ this check holds now (others join as their areas adopt the rule). */
const FILES = [
  'src/protocol/constants.ts',
  'src/link/constants.ts',
  'src/image/constants.ts',
  'src/hypervisor/constants.ts',
  'src/cli/constants.ts',
  'src/common/constants.ts',
  'src/guest/constants.ts',
];

/** Names of the exported constants in `text` that no comment explains. */
function uncommentedConstants(text: string): string[] {
  const lines = text.split('\n');
  const out: string[] = [];
  lines.forEach((line, i) => {
    const m = /^export const (\w+)/.exec(line);
    if (!m) return;
    if (/\/\/ \S/.test(line)) return; // a comment closing the line
    // Walk up through the block of constants this one belongs to (no blank line) to the comment above it.
    let j = i - 1;
    while (j >= 0 && /^(export const |\s+\w+: .*,\s*\/\/|\s+\w+: |} as const)/.test(lines[j]!) && !lines[j]!.trimEnd().endsWith('*/')) j--;
    const above = j >= 0 ? lines[j]!.trim() : '';
    if (!(above.endsWith('*/') || above.startsWith('//'))) out.push(m[1]!);
  });
  return out;
}

describe('constants files', () => {
  it('the check finds a constant without a comment, and takes doc, trailing and group comments', () => {
    const text = ['/** why */', 'export const A = 1;', 'export const B = 2; // why', '', 'export const C = 3;', '// group', 'export const D = 4;', 'export const E = 5;'].join('\n');
    expect(uncommentedConstants(text)).toEqual(['C']);
  });

  it.each(FILES)('%s: every constant has a comment saying why', (file) => {
    expect(uncommentedConstants(readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8'))).toEqual([]);
  });
});
