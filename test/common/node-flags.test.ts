import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';

describe('agent V8 flags', () => {
  it("main.js's #! line starts node with exactly the flags the demo, the bench and the tests pass", () => {
    const shebang = readFileSync(new URL('../../src/cli/main.ts', import.meta.url), 'utf8').split('\n')[0];
    expect(shebang).toBe(`#!/usr/bin/env -S node ${AGENT_NODE_FLAGS.join(' ')}`);
  });

  it('the built command runs as an executable through its #! line (how npx and an installed bin start it)', () => {
    const main = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
    expect(execFileSync(main, ['--help'], { encoding: 'utf8' })).toMatch(/^Usage: postcopy <command>/);
  });
});
