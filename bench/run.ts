// `npm run bench`: the two benchmark tiers of STYLE.md §14 (kept out of `npm test`). Micro: codecs and the block
// store in one process. Macro: real S and D processes over loopback, each figure beside its baselines from the
// same run (Node socket pipe, nbdcopy from qemu-nbd and nbdkit, cp). Prints the figures and writes
// latest.json, latest.md and SVG plots to the results directory; --benchmarks-md regenerates BENCHMARKS.md.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runMicro } from './micro.js';
import { runBulk } from './macro/bulk.js';
import { runDemo } from './macro/demo.js';
import { runDowntime } from './macro/downtime.js';
import { runLatency } from './macro/latency.js';
import { runRssSeries, runSparse } from './macro/sparse.js';
import { runWan } from './macro/wan.js';
import { denseOfSparse, mixedImage, sparseImage, type BenchImage } from './lib/images.js';
import { sh } from './lib/proc.js';
import { renderMarkdown, writeBenchmarksMd, writeSvgs } from './lib/report.js';
import type { BenchResults, MachineFacts } from './lib/results.js';
import { evaluateTargets } from './lib/targets.js';
import { GiB, MiB, sec } from './lib/units.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const TIERS = ['micro', 'bulk', 'sparse', 'latency', 'demo', 'downtime', 'rss', 'wan'] as const;
type Tier = (typeof TIERS)[number];

const HELP = `Usage: npm run bench -- [options]

  --quick              fewer rounds and cells (a few minutes); results go to bench/results/quick/
  --big                add a 16 GiB sparse image to the RSS series (needs ~20 GiB free in the work dir)
  --only LIST          comma-separated tiers: ${TIERS.join(',')}
  --rounds N           paired rounds of the bulk tier (default 5, quick 2)
  --work-dir DIR       images and scratch files (default: $TMPDIR/postcopy-bench)
  --out DIR            results directory (default: bench/results, or bench/results/quick with --quick)
  --keep               keep the work directory (images are reused by the next run)
  --benchmarks-md      regenerate BENCHMARKS.md from this run
  --report-from FILE   do not run anything: rewrite latest.md, the plots (and with --benchmarks-md,
                       BENCHMARKS.md) from a saved results JSON

Prerequisites: npm ci; qemu-nbd, nbdkit, nbdcopy on PATH (Debian: qemu-utils nbdkit libnbd-bin).`;

function toolVersion(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return 'missing';
  return (`${r.stdout}${r.stderr}`.split('\n')[0] ?? '').trim();
}

function machineFacts(workDir: string, options: Record<string, unknown>): MachineFacts {
  const cpus = os.cpus();
  const osRelease = existsSync('/etc/os-release') ? (/^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os.type()) : os.type();
  return {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memGiB: os.totalmem() / GiB,
    kernel: os.release(),
    node: process.version,
    os: osRelease,
    tools: {
      'qemu-nbd': toolVersion('qemu-nbd', ['--version']).replace(/^qemu-nbd\s*/, ''),
      nbdkit: toolVersion('nbdkit', ['--version']).replace(/^nbdkit\s*/, ''),
      nbdcopy: toolVersion('nbdcopy', ['--version']).replace(/^nbdcopy\s*/, ''),
      cp: toolVersion('cp', ['--version']).replace(/^cp \(GNU coreutils\)\s*/, 'coreutils '),
    },
    workDir,
    workDirFs: sh('df', ['-hT', workDir]).split('\n')[1]?.split(/\s+/).slice(0, 2).join(' ') ?? '?',
    gitCommit: sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']) || 'unknown',
    gitDirtyFiles: sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']).split('\n').filter((l) => l.trim()).length,
    loadAvgStart: os.loadavg(),
    loadAvgEnd: [],
    durationSec: 0,
    options,
  };
}

function regenerate(results: BenchResults, outDir: string, benchmarksMd: boolean): void {
  writeSvgs(results, outDir);
  writeFileSync(join(outDir, 'latest.md'), renderMarkdown(results, '') + '\n');
  if (benchmarksMd) writeBenchmarksMd(results, join(REPO, 'BENCHMARKS.md'), outDir, REPO);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      big: { type: 'boolean' },
      only: { type: 'string' },
      rounds: { type: 'string' },
      'work-dir': { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean' },
      'benchmarks-md': { type: 'boolean' },
      'report-from': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const quick = values.quick === true;
  const outDir = resolve(values.out ?? join(REPO, 'bench', 'results', ...(quick ? ['quick'] : [])));
  mkdirSync(outDir, { recursive: true });
  if (values['report-from']) {
    const results = JSON.parse(readFileSync(values['report-from'], 'utf8')) as BenchResults;
    results.targets = evaluateTargets(results);
    regenerate(results, outDir, values['benchmarks-md'] === true);
    process.stdout.write(renderMarkdown(results, '') + '\n');
    return 0;
  }
  const tiers = new Set<Tier>(values.only ? (values.only.split(',').map((s) => s.trim()) as Tier[]) : TIERS);
  for (const t of tiers) if (!TIERS.includes(t)) throw new Error(`unknown tier '${t}' (tiers: ${TIERS.join(', ')})`);
  // The external tools each tier's baselines need.
  const needs: Record<Tier, string[]> = { micro: [], bulk: ['qemu-nbd', 'nbdkit', 'nbdcopy'], sparse: ['nbdkit', 'nbdcopy'], latency: ['qemu-nbd'], demo: [], downtime: [], rss: [], wan: ['openssl'] };
  const missing = [...new Set([...tiers].flatMap((t) => needs[t]))].filter((t) => spawnSync(t, ['--version']).error);
  if (missing.length) {
    process.stderr.write(`bench: missing ${missing.join(', ')} (Debian: apt-get install qemu-utils nbdkit libnbd-bin)\n`);
    return 2;
  }
  const workDir = resolve(values['work-dir'] ?? join(os.tmpdir(), 'postcopy-bench'));
  mkdirSync(workDir, { recursive: true });
  const freeGiB = (() => {
    const s = statfsSync(workDir);
    return (s.bavail * s.bsize) / GiB;
  })();
  const needGiB = values.big ? 28 : 10;
  if (freeGiB < needGiB) {
    process.stderr.write(`bench: ${workDir} has ${freeGiB.toFixed(1)} GiB free; this run needs about ${needGiB} GiB\n`);
    return 2;
  }
  const rounds = Number(values.rounds ?? (quick ? 2 : 5));
  const options = { quick, big: values.big === true, tiers: [...tiers], rounds };
  const machine = machineFacts(workDir, options);
  const t0 = performance.now();
  const say = (line: string) => process.stdout.write(line + '\n');
  say(`postcopy bench${quick ? ' (quick)' : ''}: ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, kernel ${machine.kernel}; load ${machine.loadAvgStart.map((x) => x.toFixed(2)).join(' ')}`);
  say(`  work dir ${workDir} (${freeGiB.toFixed(0)} GiB free), results ${outDir}`);
  const results: BenchResults = { version: 1, machine, targets: [], errors: [] };
  const guard = async (name: string, fn: () => Promise<void>) => {
    say(`\n[${name}]`);
    try {
      await fn();
    } catch (e) {
      const msg = `${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
      results.errors.push(msg.split('\n')[0]!);
      say(`  FAILED ${msg}`);
    }
  };
  const img = (name: string, make: () => BenchImage): BenchImage => {
    const i = make();
    say(`  image ${name}: ${(i.size / GiB).toFixed(2)} GiB, ${(i.dataBytes / MiB).toFixed(0)} MiB data${i.madeInSec ? `, made in ${i.madeInSec.toFixed(1)} s` : ' (reused)'}`);
    return i;
  };

  if (tiers.has('micro')) {
    await guard('micro', async () => {
      results.micro = await runMicro({ samples: quick ? 3 : 7, sampleMs: quick ? 60 : 150, workDir }, say);
    });
  }
  let mixed: BenchImage | null = null;
  const getMixed = () => (mixed ??= img('mixed 1 GiB', () => mixedImage(join(workDir, 'mixed-1g.img'), GiB)));
  let sparse4: BenchImage | null = null;
  const getSparse4 = () => (sparse4 ??= img('sparse 4 GiB', () => sparseImage(join(workDir, 'sparse10-4g.img'), 4 * GiB)));
  if (tiers.has('bulk')) {
    await guard('bulk', async () => {
      results.bulk = await runBulk(getMixed(), { workDir, rounds, tag: 'bulk' }, say);
    });
  }
  if (tiers.has('sparse')) {
    await guard('sparse', async () => {
      const dense = img('its data alone', () => denseOfSparse(join(workDir, 'dense-of-sparse10-4g.img'), 4 * GiB));
      results.sparse = await runSparse(getSparse4(), dense, { workDir, rounds: quick ? 2 : 3 }, say);
    });
  }
  if (tiers.has('latency')) {
    await guard('latency', async () => {
      results.latency = await runLatency(getMixed(), { workDir, reps: quick ? 1 : 3, idleReads: 1500 }, say);
    });
  }
  if (tiers.has('demo')) {
    await guard('demo', async () => {
      results.demo = await runDemo({ workDir, runs: quick ? 2 : 3 }, say);
    });
  }
  if (tiers.has('downtime')) {
    await guard('downtime', async () => {
      const small = img('64 MiB disk for the guest', () => mixedImage(join(workDir, 'mixed-64m.img'), 64 * MiB));
      const rams = quick ? [256 * MiB, GiB] : [256 * MiB, GiB, 4 * GiB];
      const rates = quick ? [1000, 10000] : [1000, 10000, 50000];
      results.downtime = await runDowntime(small, { workDir, rams, rates, reps: (ram, rate) => (ram === GiB && rate === 1000 ? (quick ? 2 : 3) : 1) }, say);
    });
  }
  if (tiers.has('rss')) {
    await guard('rss', async () => {
      const series = [img('sparse 1 GiB', () => sparseImage(join(workDir, 'sparse10-1g.img'), GiB)), getSparse4()];
      if (values.big) series.push(img('sparse 16 GiB', () => sparseImage(join(workDir, 'sparse10-16g.img'), 16 * GiB)));
      results.rss = await runRssSeries(series, { workDir }, say);
    });
  }
  if (tiers.has('wan')) {
    await guard('wan', async () => {
      const image = img('mixed 512 MiB', () => mixedImage(join(workDir, 'mixed-512m.img'), 512 * MiB));
      // Each migration is capped (the slowest path with a fixed 1 MiB window takes about 30 s).
      results.wan = await runWan(image, { workDir, reps: quick ? 1 : 3, timeoutMs: 120_000, floorPings: quick ? 50 : 100 }, say);
    });
  }

  machine.loadAvgEnd = os.loadavg();
  machine.durationSec = sec(performance.now() - t0);
  results.targets = evaluateTargets(results);
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(results, null, 1) + '\n');
  regenerate(results, outDir, values['benchmarks-md'] === true);
  say('\n' + renderMarkdown(results, ''));
  say(`\nwrote ${join(outDir, 'latest.json')}, latest.md and plots${values['benchmarks-md'] ? '; BENCHMARKS.md' : ''} in ${machine.durationSec.toFixed(0)} s`);
  if (!values.keep) rmSync(workDir, { recursive: true, force: true });
  return results.errors.length ? 1 : 0;
}

process.exitCode = await main();
