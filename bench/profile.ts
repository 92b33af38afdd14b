// `node dist/bench/bench/profile.js [IMAGE] [--window SIZE] [--block-size SIZE]`: one migration of the 1 GiB mixed
// image (or IMAGE) with `node --cpu-prof` on S and D, then the hottest frames of each by self time, so a slow
// figure in the bench comes with where the time goes. Profiles stay in $TMPDIR/postcopy-bench-profile.
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { mixedImage } from './lib/images.js';
import { cleanRun, cpuSec, migrate } from './macro/migrate.js';
import { GiB } from './lib/units.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}

function summarize(file: string, top: number): string[] {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const agg = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const url = n.callFrame.url.replace(/^.*\/(dist\/bench\/|node_modules\/)/, '').replace(/^node:/, 'node:');
    const key = `${n.callFrame.functionName || '(anonymous)'} ${url ? `${url}:${n.callFrame.lineNumber + 1}` : ''}`.trim();
    agg.set(key, (agg.get(key) ?? 0) + us);
  }
  return [...agg.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, us]) => `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { window: { type: 'string' }, 'block-size': { type: 'string' }, top: { type: 'string' } } });
const work = join(os.tmpdir(), 'postcopy-bench-profile');
mkdirSync(work, { recursive: true });
const image = positionals[0] ?? mixedImage(join(work, 'mixed-1g.img'), GiB).path;
const profDir = join(work, 'prof');
rmSync(profDir, { recursive: true, force: true });
mkdirSync(profDir);
const m = await migrate({
  workDir: work,
  image,
  label: 'profile',
  nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir],
  destArgs: values.window ? ['--bulk-window', values.window] : [],
  sourceArgs: values['block-size'] ? ['--block-size', values['block-size']] : [],
});
cleanRun(work, 'profile');
process.stdout.write(`migration: whole ${(m.wholeMs / 1000).toFixed(2)} s, cut-over→complete ${(m.transferMs / 1000).toFixed(2)} s; CPU S ${cpuSec(m.source).toFixed(2)} s, D ${cpuSec(m.dest).toFixed(2)} s\n`);
for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
  const pid = Number(/\.(\d+)\.\d+\.cpuprofile$/.exec(f)?.[1] ?? /CPU\.\d+\.\d+\.(\d+)/.exec(f)?.[1]);
  const role = pid === (m.dest as unknown as { pid: number } | null)?.pid ? 'D (dest)' : pid === (m.source as unknown as { pid: number } | null)?.pid ? 'S (source)' : f;
  process.stdout.write(`\n${role}: ${join(profDir, f)}\n`);
  for (const line of summarize(join(profDir, f), Number(values.top ?? 25))) process.stdout.write(`  ${line}\n`);
}
