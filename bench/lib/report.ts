// Turns one run's JSON into the Markdown tables, the SVG plots, and BENCHMARKS.md. Every figure printed comes
// from the JSON; BENCHMARKS.md keeps its hand-written analysis between the ANALYSIS markers across regenerations.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fmtSize } from '../micro.js';
import type { BenchResults } from './results.js';
import { DEST_STAGES, SOURCE_STAGES, stageOrder, type PooledStage, type StageTable } from './stages.js';
import { fmtSpread, spread, type Spread } from './stats.js';
import { barChart } from './svg.js';
import { pathLine, type WanResult } from '../macro/wan.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const f = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));
const gib = (n: number) => `${(n / GiB).toFixed(n % GiB === 0 ? 0 : 2)} GiB`;
const mib = (n: number) => `${(n / MiB).toFixed(0)} MiB`;

function row(cells: Array<string | number>): string {
  return `| ${cells.join(' | ')} |`;
}

export function renderMarkdown(r: BenchResults, svgPrefix: string): string {
  const L: string[] = [];
  const m = r.machine;
  L.push(`Run of ${m.date}: \`${m.command}\` (${f(m.durationSec, 0)} s).`);
  L.push('');
  L.push(`**Machine:** ${m.cpus} × ${m.cpuModel}, ${f(m.memGiB, 1)} GiB RAM, kernel ${m.kernel}, ${m.os}; node ${m.node}; work dir ${m.workDir} (${m.workDirFs}).`);
  L.push(`**Tools:** ${Object.entries(m.tools).map(([k, v]) => `${k} ${v}`).join(', ')}.`);
  L.push(`**Load average** at start ${m.loadAvgStart.map((x) => x.toFixed(2)).join(' / ')}, at end ${m.loadAvgEnd.map((x) => x.toFixed(2)).join(' / ')} (other work on the machine shows here). **Code:** ${m.gitCommit}${m.gitDirtyFiles ? ` + ${m.gitDirtyFiles} uncommitted files` : ''}.`);
  L.push('');
  L.push('Figures are median (min–max) over the runs stated. Times are whole-process wall times unless marked "cut-over→complete".');
  L.push('');

  L.push('### Targets');
  L.push('');
  L.push(row(['target', 'measured', 'same-run baseline', 'status']));
  L.push(row(['---', '---', '---', '---']));
  for (const t of r.targets) L.push(row([t.target, t.measured, t.baseline ?? '—', t.met === null ? 'not measured' : t.met ? '**met**' : '**not met**']));
  L.push('');

  if (r.bulk) {
    const b = r.bulk;
    L.push(`### Bulk: ${gib(b.image.size)} ${b.image.kind} image (${mib(b.image.dataBytes)} non-zero, ${mib(b.image.allocatedBytes)} allocated), ${b.rounds} paired rounds`);
    L.push('');
    L.push(`Each round runs every contender once (order rotated), into a new output file after \`rm\` + \`sync\`. Ratios are ours ÷ baseline per round. Ours moved ${mib(b.moved.bulkBytes)} in bulk, ${mib(b.moved.demandBytes)} on demand, and skipped ${mib(b.moved.zeroSkipped)} of zeroes; bulk rate over cut-over→complete ${fmtSpread(b.bulkMiBps, 0)} MiB/s.`);
    L.push('');
    L.push(row(['contender', 'wall s', 'image MiB/s', 'ours ÷ this', 'CPU s (client+server)', 'CPU s / GiB of image', 'CPU s / GiB: server (ours S) + client (ours D)']));
    L.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---:']));
    const perGiB = b.image.size / GiB;
    for (const c of b.contenders) {
      L.push(
        row([
          c.label + (c.failures ? ` (${c.failures} failed)` : ''),
          fmtSpread(c.wallSec, 2),
          f(b.image.size / MiB / c.wallSec.median, 0),
          c.oursOverThis ? fmtSpread(c.oursOverThis, 2) : '—',
          fmtSpread(c.cpuSec, 2),
          f(c.cpuSec.median / perGiB, 2),
          c.sideCpuSec ? `${f(c.sideCpuSec.server.median / perGiB)} + ${f(c.sideCpuSec.client.median / perGiB)}` : '—',
        ]),
      );
    }
    const ours = b.contenders.find((c) => c.id === 'postcopy');
    if (ours?.transferSec) L.push('', `Ours, cut-over→complete (D's events): ${fmtSpread(ours.transferSec, 2)} s. Peak RSS: S ${fmtSpread(ours.rssMiB?.source, 0)} MiB, D ${fmtSpread(ours.rssMiB?.dest, 0)} MiB.`);
    if (b.serviceOverNbdkit) L.push('', `Jobs between two running \`postcopy serve\` (submit → both completed, through the control API) ÷ nbdcopy from a running nbdkit, per round: ${fmtSpread(b.serviceOverNbdkit, 2)} (neither pays a process start-up).`);
    L.push('', `![bulk](${svgPrefix}bulk.svg)`, '');
  }

  if (r.sparse) {
    const s = r.sparse;
    L.push(`### Sparse: ${gib(s.sparse.size)} image with ${mib(s.sparse.dataBytes)} of data vs its data alone (${mib(s.dense.size)} dense), ${s.rounds} paired rounds`);
    L.push('');
    L.push(row(['run', 'whole-process s', 'cut-over→complete s', 'CPU s']));
    L.push(row(['---', '---:', '---:', '---:']));
    L.push(row(['postcopy, sparse image', fmtSpread(s.oursSparse.wallSec), fmtSpread(s.oursSparse.transferSec), fmtSpread(s.oursSparse.cpuSec)]));
    L.push(row(['postcopy, its data alone', fmtSpread(s.oursDense.wallSec), fmtSpread(s.oursDense.transferSec), fmtSpread(s.oursDense.cpuSec)]));
    L.push(row(['ratio sparse ÷ data alone (paired)', fmtSpread(s.ratioWhole), fmtSpread(s.ratioTransfer), '']));
    L.push(row(['nbdcopy from nbdkit, sparse image', fmtSpread(s.nbdcopyNbdkitSec), '', '']));
    L.push(row(['cp, sparse image', fmtSpread(s.cpSec), '', '']));
    L.push('');
  }

  if (r.latency) {
    const l = r.latency;
    L.push(`### Demand reads: 4 KiB through D's NBD export (Unix socket) on blocks D does not hold, ${l.reps} rep(s) per mode`);
    L.push('');
    L.push('"stream running": the background stream runs at full speed (default window). "stream not started": the stream is held until the reads are done (bench-only switch, same processes and path), so demand fetches travel alone on the link. Only reads D logged as misses count. The local floor: as many 64 KiB reads of the same image, one at a time at random data blocks, from qemu-nbd on a Unix socket with the same client, after each stream run.');
    L.push('');
    L.push(row(['mode', 'misses (hits)', 'client p50 ms', 'client p99 ms', 'client max ms', "D's store p50 / p99 / max ms", 'stream MiB/s during the reads (whole migration)']));
    L.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---:']));
    for (const [name, x] of [['stream running', l.bulk], ['stream not started', l.idle]] as const) {
      const during = x.streamDuringReads ? fmtSpread(spread(x.streamDuringReads.map((w) => w.miBps)), 0) : 'n/a';
      L.push(row([name, `${x.client.count} (${x.hits})`, f(x.client.p50, 3), f(x.client.p99, 3), f(x.client.max, 3), `${f(x.store.p50, 3)} / ${f(x.store.p99, 3)} / ${f(x.store.max, 3)}`, x === l.bulk ? `${during} (${fmtSpread(x.bulkMiBps, 0)})` : '—']));
    }
    if (l.qemuNbd) {
      const q = l.qemuNbd.client;
      L.push(row(['local floor: qemu-nbd 64 KiB', `${q.count} reads`, f(q.p50, 3), f(q.p99, 3), f(q.max, 3), '—', '—']));
    }
    if (l.bulk.streamDuringReads?.length) {
      L.push('', `Stream rate during the reads: from D's progress events (every 100 ms) ${l.bulk.streamDuringReads.map((w) => `over ${f(w.spanSec)} s of a ${f(w.windowSec)} s read window (${w.basis})`).join('; ')}.`);
    }
    L.push('', `Head-of-line ratio (stream running ÷ not started, client side): p99 ${f(l.holRatioP99)}×, p50 ${f(l.holRatioP50)}×. D's own demand fetch latency (its summary's demandLatency, all its misses): stream running ${demandLine(l.bulk)}; stream not started ${demandLine(l.idle)}.`);
    L.push('', `![latency](${svgPrefix}latency.svg)`, '');
  }

  if (r.demo) {
    const d = r.demo;
    L.push(`### The demo: \`postcopy demo\` (1 GiB image, S's simulated guest moves to D mid-migration), ${d.runs} run(s)${d.failures ? `, ${d.failures} failed` : ''}`);
    L.push('');
    L.push(row(['guest reads on D per run', 'guest read p50 ms', 'guest read p99 ms', 'guest read max ms', "D's demand fetch p99 ms", 'downtime ms', 'wall s']));
    L.push(row(['---:', '---:', '---:', '---:', '---:', '---:', '---:']));
    L.push(row([d.guestReads.join(', ') || 'n/a', fmtSpread(d.guestReadP50Ms), fmtSpread(d.guestReadP99Ms), fmtSpread(d.guestReadMaxMs), fmtSpread(d.demandP99Ms), fmtSpread(d.downtimeMs, 0), fmtSpread(d.wallSec, 1)]));
    L.push('');
  }

  if (r.latency || r.demo) {
    L.push(
      ...renderStageSection([
        ...(r.latency ? ([['stream not started', r.latency.idle.stages], ['stream running', r.latency.bulk.stages]] as const) : []),
        ...(r.demo ? ([['demo', r.demo.stages]] as const) : []),
      ]),
    );
  }

  if (r.downtime) {
    L.push('### Cut-over downtime (S\'s simulated guest, no disk operations; max downtime budget 50 ms)');
    L.push('');
    L.push(row(['guest RAM', 'dirty pages/s', 'downtime ms', 'pre-copy rounds', 'final pages', 'pre-copy MiB', 'converged', 'n']));
    L.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---', '---:']));
    for (const c of r.downtime) {
      L.push(row([gib(c.ramBytes).replace('0.25 GiB', '256 MiB'), c.dirtyPagesPerSec, fmtSpread(c.downtimeMs, 0), fmtSpread(c.rounds, 0), fmtSpread(c.finalPages, 0), fmtSpread(c.precopyMiB, 0), c.converged.map((x) => (x ? 'yes' : 'no')).join(' '), `${c.downtimeMs.n}${c.failures ? ` (${c.failures} failed)` : ''}`]));
    }
    L.push('', `![downtime](${svgPrefix}downtime.svg)`, '');
  }

  if (r.rss) {
    L.push('### Peak RSS and CPU per image size (one migration each, no guest)');
    L.push('');
    L.push(row(['image', 'data', 'S peak RSS MiB', 'D peak RSS MiB', 'whole-process s', 'cut-over→complete s', 'CPU s (S+D)', 'CPU s / GiB moved']));
    L.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
    for (const p of r.rss) L.push(row([`${gib(p.image.size)} ${p.image.kind}`, mib(p.image.dataBytes), f(p.sourceMiB, 0), f(p.destMiB, 0), f(p.wallSec), f(p.transferSec), f(p.cpuSec), f(p.cpuSecPerGiBMoved)]));
    L.push('', `![rss](${svgPrefix}rss.svg)`, '');
  }

  if (r.wan) L.push(...renderWanSection(r.wan));

  if (r.micro) {
    L.push('### Micro tier (one process; MiB/s, median (min–max) of the samples)');
    L.push('');
    const sizes = [...new Set(r.micro.map((x) => x.size))];
    const benches = [...new Set(r.micro.map((x) => x.bench))];
    L.push(row(['bench', ...sizes.map(fmtSize)]));
    L.push(row(['---', ...sizes.map(() => '---:')]));
    for (const b of benches) {
      L.push(
        row([
          b,
          ...sizes.map((s) => {
            const x = r.micro!.find((m) => m.bench === b && m.size === s);
            return x ? `${fmtSpread(x.mibPerSec, 0)}${x.note ? ` [${x.note}]` : ''}` : '—';
          }),
        ]),
      );
    }
    L.push('', `![micro](${svgPrefix}micro.svg)`, '');
  }
  if (r.errors.length) {
    L.push('### Errors in this run', '');
    for (const e of r.errors) L.push(`- ${e}`);
    L.push('');
  }
  return L.join('\n');
}

/** The WAN tier's table: one row per path, then D's path estimate per run where its summary had one. */
export function renderWanSection(w: WanResult): string[] {
  const L: string[] = [];
  L.push(`### WAN: ${gib(w.image.size)} mixed image (${mib(w.image.dataBytes)} non-zero) through a loopback WAN emulator in its own process, ${w.reps} rep(s) per path`);
  L.push('');
  L.push("S connects to D through `bench/wan-proxy-main.ts`: each direction delayed by RTT/2, and on capped paths a FIFO bottleneck of that rate with an 8 MiB buffer. D and S run with default options. Goodput: D's `bytesFetchedBulk` ÷ cut-over→complete. Demand: 4 KiB reads through D's NBD export, one at a time while the stream runs, as in the demand tier; only misses count. Path floor: a 64 B request and a 64 KiB reply, one at a time, through the same emulator on the same path with nothing else on it (the RTT, the reply's time through the bottleneck, the proxy's own hop and wake-ups: what no miss can beat). Max queue: the largest backlog at the emulated bottleneck (S → D).");
  L.push('');
  L.push(row(['path', 'whole-process s', 'cut-over→complete s', 'bulk goodput MiB/s', 'demand misses (hits)', 'miss p50 ms', 'miss p99 ms', 'miss max ms', 'path floor p50 / p99 ms', 'max queue MiB']));
  L.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
  for (const s of w.scenarios) {
    const hits = s.runs.reduce((a, x) => a + x.hits, 0);
    const name = s.label + (s.failures ? ` (${s.failures} of ${s.runs.length} failed)` : '');
    L.push(row([name, fmtSpread(s.wholeSec), fmtSpread(s.transferSec), fmtSpread(s.goodputMiBps, 1), `${s.demand.count} (${hits})`, f(s.demand.p50), f(s.demand.p99), f(s.demand.max), `${f(s.floor?.p50)} / ${f(s.floor?.p99)}`, fmtSpread(s.maxQueueMiB)]));
  }
  L.push('', `Whole migration at 20 ms RTT ÷ no delay, paired per rep: ${fmtSpread(w.rtt20OverNone)}×.`);
  const estimates = w.scenarios.flatMap((s) => s.runs.map((x, i) => [s, i, x] as const)).filter(([, , x]) => x.path);
  if (estimates.length) {
    L.push('', "D's path estimate (its summary's `path`), per run:", '');
    for (const [s, i, x] of estimates) L.push(`- ${s.label}, rep ${i + 1}: ${pathLine(x.path)}`);
  } else L.push('', "D's summaries have no path estimate (`path`) in this run.");
  L.push('');
  return L;
}

function demandLine(m: { destSummaryDemand: Array<Record<string, number>> }): string {
  return m.destSummaryDemand.map((d) => `p50 ${f(d.p50Ms, 3)} / p99 ${f(d.p99Ms, 3)} / max ${f(d.maxMs, 3)} ms (${d.count})`).join('; ') || 'n/a';
}

/** The agents report stages in ms; the table says µs, where a demand miss's stages differ. */
const us = (ms: number) => (Number.isFinite(ms) ? Math.round(ms * 1000).toString() : 'n/a');

/** One cell: "p50 / p99 / max (count)" in µs; p50 and p99 are the median over reps of each run's own figure. */
function stageCell(s: PooledStage | undefined): string {
  return s ? `${us(s.p50Ms.median)} / ${us(s.p99Ms.median)} / ${us(s.maxMs)} (${s.count})` : 'n/a';
}

/**
 * The per-stage table of a demand miss, one column per mode: D's stages (export → answered) then S's (received →
 * reply on the socket). "n/a" where an agent did not report the stage (an agent without stage timings).
 */
export function renderStageSection(modes: ReadonlyArray<readonly [string, StageTable | undefined]>): string[] {
  const L: string[] = [];
  L.push('### Demand-miss stages (µs: p50 / p99 / max (count); p50 and p99 are the median over reps of each run\'s figure)');
  L.push('');
  L.push("D's stages come from its summary (`demandStages`), S's from its summary (`urgentStages`): D: export request received → BLOCK_REQ queued → frame handed to the socket → reply decoded (S's time and the wire both ways) → written → NBD reply handed to the export socket. S: BLOCK_REQ decoded → read done → reply handed to the socket.");
  L.push('');
  L.push(row(['agent', 'stage', ...modes.map(([m]) => m)]));
  L.push(row(['---', '---', ...modes.map(() => '---:')]));
  const any = modes.some(([, t]) => t && (Object.keys(t.dest).length || Object.keys(t.source).length));
  for (const [agent, key, known] of [['D', 'dest', DEST_STAGES], ['S', 'source', SOURCE_STAGES]] as const) {
    for (const stage of stageOrder(known, ...modes.map(([, t]) => t?.[key]))) L.push(row([agent, stage, ...modes.map(([, t]) => stageCell(t?.[key][stage]))]));
  }
  if (!any) L.push('', 'No stage timings in this run: the agents\' summaries have no `demandStages` / `urgentStages`.');
  L.push('');
  return L;
}

const val = (s: Spread | undefined) => (s && s.n > 0 ? s.median : null);

export function writeSvgs(r: BenchResults, dir: string): string[] {
  const files: string[] = [];
  const put = (name: string, svg: string) => {
    writeFileSync(join(dir, name), svg);
    files.push(name);
  };
  if (r.bulk) {
    const cs = r.bulk.contenders;
    put(
      'bulk.svg',
      barChart({
        title: `Moving the ${gib(r.bulk.image.size)} ${r.bulk.image.kind} image into a file (whole-process wall time)`,
        yLabel: 'seconds',
        groups: cs.map((c) => c.label.replace(' (', '\n(').replace(', ', ',\n').replace(' from ', '\nfrom ')),
        series: [{ name: 'median, whiskers min–max', values: cs.map((c) => val(c.wallSec)), lo: cs.map((c) => c.wallSec.min), hi: cs.map((c) => c.wallSec.max) }],
      }),
    );
  }
  if (r.latency) {
    const l = r.latency;
    put(
      'latency.svg',
      barChart({
        title: '4 KiB demand reads of missing blocks via D\'s export',
        yLabel: 'ms',
        log: true,
        groups: ['p50', 'p99', 'max'],
        series: [
          { name: 'stream not started', values: [l.idle.client.p50, l.idle.client.p99, l.idle.client.max] },
          { name: 'stream running', values: [l.bulk.client.p50, l.bulk.client.p99, l.bulk.client.max] },
          ...(l.qemuNbd ? [{ name: 'qemu-nbd 64 KiB (local floor)', values: [l.qemuNbd.client.p50, l.qemuNbd.client.p99, l.qemuNbd.client.max] }] : []),
        ],
        refs: [{ value: 1, label: 'target p99 1 ms' }],
      }),
    );
  }
  if (r.downtime) {
    const rates = [...new Set(r.downtime.map((c) => c.dirtyPagesPerSec))];
    const rams = [...new Set(r.downtime.map((c) => c.ramBytes))];
    put(
      'downtime.svg',
      barChart({
        title: 'Cut-over downtime by guest RAM and dirty rate',
        yLabel: 'ms',
        groups: rams.map((x) => (x < GiB ? `${x / MiB} MiB RAM` : `${x / GiB} GiB RAM`)),
        series: rates.map((rate) => {
          const cells = rams.map((ram) => r.downtime!.find((c) => c.ramBytes === ram && c.dirtyPagesPerSec === rate));
          return { name: `${rate} pages/s`, values: cells.map((c) => val(c?.downtimeMs)), lo: cells.map((c) => c?.downtimeMs.min ?? null), hi: cells.map((c) => c?.downtimeMs.max ?? null) };
        }),
        refs: [{ value: 50, label: 'target 50 ms' }],
      }),
    );
  }
  if (r.rss) {
    put(
      'rss.svg',
      barChart({
        title: 'Peak RSS per agent by image size',
        yLabel: 'MiB',
        groups: r.rss.map((p) => `${gib(p.image.size)}\n${p.image.kind}`),
        series: [
          { name: 'source (S)', values: r.rss.map((p) => p.sourceMiB) },
          { name: 'destination (D)', values: r.rss.map((p) => p.destMiB) },
        ],
        refs: [{ value: 128, label: 'target 128 MiB' }],
      }),
    );
  }
  if (r.micro) {
    const sizes = [...new Set(r.micro.map((x) => x.size))];
    const benches = [...new Set(r.micro.map((x) => x.bench))];
    put(
      'micro.svg',
      barChart({
        title: 'Micro tier throughput by message / write size',
        yLabel: 'MiB/s',
        log: true,
        groups: sizes.map(fmtSize),
        series: benches.map((b) => {
          const xs = sizes.map((s) => r.micro!.find((m) => m.bench === b && m.size === s));
          return { name: b, values: xs.map((x) => val(x?.mibPerSec)), lo: xs.map((x) => x?.mibPerSec.min ?? null), hi: xs.map((x) => x?.mibPerSec.max ?? null) };
        }),
      }),
    );
  }
  return files;
}

const A_START = '<!-- ANALYSIS:START (hand-written; kept when this file is regenerated) -->';
const A_END = '<!-- ANALYSIS:END -->';

/** Regenerate BENCHMARKS.md from a run's JSON, keeping the hand-written analysis block. */
export function writeBenchmarksMd(r: BenchResults, mdPath: string, resultsDir: string, repoRoot: string): void {
  let analysis = '_No analysis yet._';
  if (existsSync(mdPath)) {
    const old = readFileSync(mdPath, 'utf8');
    const a = old.indexOf(A_START);
    const b = old.indexOf(A_END);
    if (a >= 0 && b > a) analysis = old.slice(a + A_START.length, b).trim();
  }
  const rel = relative(repoRoot, resultsDir) || '.';
  const body = renderMarkdown(r, `${rel}/`);
  const text = [
    '# Benchmarks',
    '',
    `Generated by \`npm run bench -- --benchmarks-md\` from [\`${rel}/latest.json\`](${rel}/latest.json); do not edit the figures by hand.`,
    'How the figures are made: [bench/README.md](bench/README.md). Regenerate this file from a saved run with',
    `\`npm run bench -- --report-from ${rel}/latest.json --benchmarks-md\`.`,
    '',
    '## Analysis: targets, gaps and causes',
    '',
    A_START,
    analysis,
    A_END,
    '',
    '## Latest figures',
    '',
    body,
  ].join('\n');
  writeFileSync(mdPath, text.endsWith('\n') ? text : text + '\n');
}
