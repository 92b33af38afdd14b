// Sparse tier: our migration of a sparse image (10% data) against our migration of its data alone (the same
// bytes packed into a dense image), paired per round; nbdcopy from nbdkit and cp of the sparse image as references.
// Also the RSS series: peak RSS of each agent migrating sparse images of growing size.
import { join } from 'node:path';
import type { BenchImage } from '../lib/images.js';
import { Server, freePort, freshOutput, lastEvent, start, timed, waitConnectable } from '../lib/proc.js';
import { spread, type Spread } from '../lib/stats.js';
import { cleanRun, cpuSec, migrate } from './migrate.js';
import { GiB, kibToMiB, sec } from '../lib/units.js';

export interface SparseResult {
  sparse: Omit<BenchImage, 'dataRuns'>;
  dense: Omit<BenchImage, 'dataRuns'>;
  rounds: number;
  oursSparse: { wallSec: Spread; transferSec: Spread; cpuSec: Spread };
  oursDense: { wallSec: Spread; transferSec: Spread; cpuSec: Spread };
  /** Paired per round: sparse / dense, whole-process and cut-over → complete. */
  ratioWhole: Spread;
  ratioTransfer: Spread;
  nbdcopyNbdkitSec: Spread;
  cpSec: Spread;
  /** Per sparse round, how S found the zero runs (its `extents` event): the extent map or a read of it all, and the bytes it did not read. */
  zeroMap: ZeroMapUse[];
}

export interface ZeroMapUse {
  method: string;
  unreadBytes: number | null;
  fallback?: string;
}

/** S's account of its zero scan; 'not reported' from a build whose events lack it. */
function zeroMapUse(sourceEvents: string): ZeroMapUse {
  const e = lastEvent(sourceEvents, 'extents') as Record<string, unknown> | undefined;
  const method = typeof e?.method === 'string' ? e.method : 'not reported';
  return { method, unreadBytes: typeof e?.unreadBytes === 'number' ? e.unreadBytes : null, ...(typeof e?.fallback === 'string' ? { fallback: e.fallback } : {}) };
}

function describeUse(u: ZeroMapUse): string {
  if (u.unreadBytes === null) return u.method;
  return `${u.method}, ${(u.unreadBytes / GiB).toFixed(2)} GiB not read${u.fallback ? `; no map: ${u.fallback}` : ''}`;
}

export async function runSparse(sparse: BenchImage, dense: BenchImage, o: { workDir: string; rounds: number }, log: (l: string) => void): Promise<SparseResult> {
  const dir = o.workDir;
  const out = join(dir, 'sparse.out.img');
  const kPort = await freePort();
  const nbdkit = new Server('nbdkit', start('nbdkit', ['-f', '-r', '-i', '127.0.0.1', '-p', String(kPort), '-e', 'disk', 'file', sparse.path], { log: join(dir, 'nbdkit-sparse.log') }));
  try {
    await waitConnectable({ port: kPort });
    const rs: Array<{ w: number; t: number; c: number }> = [];
    const rd: Array<{ w: number; t: number; c: number }> = [];
    const nk: number[] = [];
    const cp: number[] = [];
    const uses: ZeroMapUse[] = [];
    for (let round = 0; round < o.rounds; round++) {
      const steps: Array<() => Promise<string>> = [
        async () => {
          const m = await migrate({ workDir: dir, image: sparse.path, label: 'sparse' });
          cleanRun(dir, 'sparse');
          if (m.destCode !== 0 || m.sourceCode !== 0) throw new Error(`sparse migration failed: ${m.destCode}/${m.sourceCode}`);
          rs.push({ w: sec(m.wholeMs), t: sec(m.transferMs), c: cpuSec(m.dest) + cpuSec(m.source) });
          const use = zeroMapUse(m.sourceEvents);
          uses.push(use);
          return `sparse ${(m.wholeMs / 1000).toFixed(2)}s (zero runs: ${describeUse(use)})`;
        },
        async () => {
          const m = await migrate({ workDir: dir, image: dense.path, label: 'dense' });
          cleanRun(dir, 'dense');
          if (m.destCode !== 0 || m.sourceCode !== 0) throw new Error(`dense migration failed: ${m.destCode}/${m.sourceCode}`);
          rd.push({ w: sec(m.wholeMs), t: sec(m.transferMs), c: cpuSec(m.dest) + cpuSec(m.source) });
          return `data alone ${(m.wholeMs / 1000).toFixed(2)}s`;
        },
        async () => {
          freshOutput(out);
          const r = await timed('nbdcopy', [`nbd://127.0.0.1:${kPort}/disk`, out]);
          nk.push(r.code === 0 ? sec(r.wallMs) : NaN);
          return `nbdcopy ${(r.wallMs / 1000).toFixed(2)}s`;
        },
        async () => {
          freshOutput(out);
          const r = await timed('cp', [sparse.path, out]);
          cp.push(r.code === 0 ? sec(r.wallMs) : NaN);
          return `cp ${(r.wallMs / 1000).toFixed(2)}s`;
        },
      ];
      const line: string[] = [];
      for (let i = 0; i < steps.length; i++) line.push(await steps[(i + round) % steps.length]!());
      log(`  round ${round + 1}/${o.rounds}: ${line.join(', ')}`);
    }
    freshOutput(out);
    const pick = (xs: Array<{ w: number; t: number; c: number }>) => ({ wallSec: spread(xs.map((x) => x.w)), transferSec: spread(xs.map((x) => x.t)), cpuSec: spread(xs.map((x) => x.c)) });
    const { dataRuns: _a, ...s } = sparse;
    const { dataRuns: _b, ...d } = dense;
    return {
      sparse: s,
      dense: d,
      rounds: o.rounds,
      oursSparse: pick(rs),
      oursDense: pick(rd),
      ratioWhole: spread(rs.map((x, i) => x.w / rd[i]!.w)),
      ratioTransfer: spread(rs.map((x, i) => x.t / rd[i]!.t)),
      nbdcopyNbdkitSec: spread(nk),
      cpSec: spread(cp),
      zeroMap: uses,
    };
  } finally {
    await nbdkit.stop();
  }
}

export interface RssPoint {
  image: Omit<BenchImage, 'dataRuns'>;
  sourceMiB: number;
  destMiB: number;
  wallSec: number;
  transferSec: number;
  cpuSec: number;
  movedBytes: number;
  cpuSecPerGiBMoved: number;
}

/** One migration per image: peak RSS (VmHWM via getrusage at exit) of S and D, CPU per GiB moved. */
export async function runRssSeries(images: BenchImage[], o: { workDir: string }, log: (l: string) => void): Promise<RssPoint[]> {
  const points: RssPoint[] = [];
  for (const img of images) {
    const m = await migrate({ workDir: o.workDir, image: img.path, label: 'rss', timeoutMs: 900_000 });
    cleanRun(o.workDir, 'rss');
    if (m.destCode !== 0 || m.sourceCode !== 0) throw new Error(`rss migration of ${img.path} failed: ${m.destCode}/${m.sourceCode}`);
    const ds = (m.destSummary ?? {}) as Record<string, number>;
    const moved = (ds.bytesFetchedBulk ?? 0) + (ds.bytesFetchedDemand ?? 0);
    const cpu = cpuSec(m.dest) + cpuSec(m.source);
    const { dataRuns: _d, ...image } = img;
    const p: RssPoint = {
      image,
      sourceMiB: kibToMiB(m.source?.maxRssKiB ?? NaN),
      destMiB: kibToMiB(m.dest?.maxRssKiB ?? NaN),
      wallSec: sec(m.wholeMs),
      transferSec: sec(m.transferMs),
      cpuSec: cpu,
      movedBytes: moved,
      cpuSecPerGiBMoved: cpu / (moved / GiB),
    };
    log(`  ${(img.size / 2 ** 30).toFixed(0)} GiB ${img.kind}: S ${p.sourceMiB.toFixed(0)} MiB, D ${p.destMiB.toFixed(0)} MiB peak RSS; ${p.wallSec.toFixed(2)} s; ${p.cpuSecPerGiBMoved.toFixed(2)} CPU s/GiB moved`);
    points.push(p);
  }
  return points;
}
