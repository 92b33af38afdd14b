// What `npm pack` ships and what `postcopy --version` says: the package carries the built commands, the licence and
// the changelog, and none of the bench build or source maps whose sources are not shipped.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(new URL(import.meta.url).pathname), '..', '..');
const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };

describe('the package', () => {
  it('ships the commands, LICENSE and CHANGELOG.md, no bench build and no source maps', async () => {
    // --ignore-scripts: the file list is what is asked about, not a rebuild.
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT });
    const files = (JSON.parse(stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'CHANGELOG.md', 'README.md', 'package.json', 'dist/cli/main.js']));
    expect(files.filter((f) => f.endsWith('.map') || f.startsWith('dist/bench/') || f.endsWith('.ts'))).toEqual([]);
    expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License/);
  }, 60_000);

  it("`postcopy --version` prints package.json's version and the protocol range", async () => {
    const { stdout } = await run(process.execPath, [join(ROOT, pkg.bin.postcopy!), '--version']);
    expect(stdout).toMatch(new RegExp(`^postcopy ${pkg.version.replace(/\./g, '\\.')} \\(migration protocol \\d+\\.\\.\\d+\\)\\n$`));
  });
});
