// `postcopy demo`: the main job on an embedded default. Makes a 1 GiB image, runs S (with the simulated guest)
// and D as two processes over TCP loopback, migrates, verifies D's image block by block, prints a summary.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PRIVATE_FILE_MODE } from '../common/constants.js';
import { freePort } from '../common/free-port.js';
import { DEMO_EVENTS_POLL_MS, DEMO_PROGRESS_EVERY_MS, DEMO_TICKET_BYTES } from './constants.js';
import { AGENT_NODE_FLAGS } from './node-flags.js';
import { generateDemoImage } from '../guest/image-gen.js';
import { verifyMigration } from '../guest/verify.js';
import { loadWriteMap } from '../guest/write-map.js';
import { parseCommandArgs, optional } from './args.js';
import { EXIT } from './exit-codes.js';
import { formatBytes, parseIntArg, parseSize } from './sizes.js';
import { DEST_SIDE, type DestSample, type RamRound } from './progress.js';
import { progressMode, ProgressView } from './terminal.js';

export const DEMO_HELP = `Usage: postcopy demo [options]

Generate an image, migrate it with a running simulated guest between two processes over TCP loopback,
verify the destination block by block, and print a summary.

  --size SIZE         image size (default 1G)
  --ram SIZE          guest RAM (default 256M)
  --dirty-rate N      guest RAM pages dirtied per second (default 1000)
  --disk-ops N        guest disk operations per second (default 400)
  --seed N            seed for the image and the guest (default 1)
  --dir DIR           work directory (default: a new temporary one)
  --keep              keep the work directory (images, logs, events)`;

interface DemoEvent {
  event: string;
  role: string;
  [k: string]: unknown;
}

export async function runDemo(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    size: { type: 'string' },
    ram: { type: 'string' },
    'dirty-rate': { type: 'string' },
    'disk-ops': { type: 'string' },
    seed: { type: 'string' },
    dir: { type: 'string' },
    'bulk-window': { type: 'string' },
    keep: { type: 'boolean' },
  });
  if (values.help) {
    process.stdout.write(DEMO_HELP + '\n');
    return EXIT.OK;
  }
  const size = parseSize(optional(values, 'size') ?? '1G', '--size');
  const ram = optional(values, 'ram') ?? '256M';
  parseSize(ram, '--ram');
  const seed = parseIntArg(optional(values, 'seed') ?? '1', '--seed', 0, 0xffffffff);
  const dirtyRate = optional(values, 'dirty-rate') ?? '1000';
  const diskOps = optional(values, 'disk-ops') ?? '400';
  const dirArg = optional(values, 'dir');
  const dir = dirArg ?? mkdtempSync(join(tmpdir(), 'postcopy-demo-'));
  mkdirSync(dir, { recursive: true });
  // On a terminal, D's bar (from its progress events) at the bottom, every other line above it; elsewhere lines only.
  const view = new ProgressView(DEST_SIDE, progressMode({ flag: false, isTTY: process.stdout.isTTY === true, env: process.env }) === 'bar' ? 'bar' : 'off', {
    write: (t) => void process.stdout.write(t),
    columns: () => process.stdout.columns,
    now: () => performance.now(),
  });
  const out = (line: string) => view.say(line);
  const paths = {
    src: join(dir, 'source.img'),
    dst: join(dir, 'dest.img'),
    dstState: join(dir, 'dest-state'),
    srcState: join(dir, 'source-state'),
    ticket: join(dir, 'ticket'),
    dstEvents: join(dir, 'dest-events.jsonl'),
    srcEvents: join(dir, 'source-events.jsonl'),
    dstLog: join(dir, 'dest.log'),
    srcLog: join(dir, 'source.log'),
  };
  for (const p of [paths.dstEvents, paths.srcEvents]) rmSync(p, { force: true });
  rmSync(paths.dstState, { recursive: true, force: true });
  rmSync(paths.srcState, { recursive: true, force: true });

  out(`postcopy demo: work directory ${dir}`);
  const genStart = performance.now();
  const layout = generateDemoImage(paths.src, size, seed);
  out(
    `  image ${formatBytes(size)}: data ${formatBytes(layout.dataBytes)}, written zeroes ${formatBytes(layout.zeroBytes)}, ` +
      `holes ${formatBytes(layout.holeBytes)} (made in ${((performance.now() - genStart) / 1000).toFixed(1)} s)`,
  );
  writeFileSync(paths.ticket, randomBytes(DEMO_TICKET_BYTES).toString('hex') + '\n', { mode: PRIVATE_FILE_MODE });
  const port = await freePort();
  const main = fileURLToPath(new URL('./main.js', import.meta.url));

  const wallStart = performance.now();
  const dest = spawnAgent(main, ['dest', '--listen', `127.0.0.1:${port}`, '--image', paths.dst, '--state-dir', paths.dstState, '--ticket-file', paths.ticket, '--events', paths.dstEvents, ...(optional(values, 'bulk-window') ? ['--bulk-window', optional(values, 'bulk-window')!] : [])], paths.dstLog);
  const source = spawnAgent(
    main,
    [
      'source', '--connect', `127.0.0.1:${port}`, '--image', paths.src, '--state-dir', paths.srcState, '--ticket-file', paths.ticket,
      '--guest', 'sim', '--ram', ram, '--dirty-rate', dirtyRate, '--disk-ops', diskOps, '--seed', String(seed), '--events', paths.srcEvents,
    ],
    paths.srcLog,
  );
  out(`  started destination (pid ${dest.pid}) and source (pid ${source.pid}) on 127.0.0.1:${port}`);
  const watcher = watchEvents([paths.srcEvents, paths.dstEvents], out, view);
  const [srcCode, dstCode] = await Promise.all([exitCode(source), exitCode(dest)]);
  watcher.stop();
  const lastProgress = lastEvent(paths.dstEvents, 'progress');
  view.finish(lastProgress ? (lastProgress as unknown as DestSample) : null, srcCode === 0 && dstCode === 0 ? 'complete' : 'failed');
  const wallMs = performance.now() - wallStart;
  if (srcCode !== 0 || dstCode !== 0) {
    out(`demo FAILED: source exited ${srcCode}, destination exited ${dstCode}; logs: ${paths.srcLog}, ${paths.dstLog}`);
    return EXIT.INTERNAL;
  }
  const srcSummary = lastEvent(paths.srcEvents, 'summary');
  const dstSummary = lastEvent(paths.dstEvents, 'summary');

  out('  verifying the destination image block by block ...');
  const { map } = loadWriteMap(join(paths.dstState, 'guest-writes.json'));
  const verify = await verifyMigration({ sourceImage: paths.src, destImage: paths.dst, writeMap: map.entries() });

  const pre = (srcSummary?.precopy ?? {}) as Record<string, number>;
  const blocks = (dstSummary ?? {}) as Record<string, unknown>;
  const lat = (blocks.demandLatency ?? {}) as Record<string, number>;
  const guest = (blocks.guest ?? {}) as Record<string, unknown>;
  const guestLat = (guest.readLatency ?? {}) as Record<string, number>;
  out('');
  out('Summary');
  out(`  downtime (guest paused on S until running on D)  ${srcSummary?.downtimeMs ?? '?'} ms`);
  out(`  RAM pre-copy rounds                              ${pre.rounds ?? '?'} (${formatBytes(pre.bytesSent ?? 0)} sent, ${pre.finalPages ?? '?'} pages in the final pass, converged: ${pre.converged})`);
  out(`  bytes moved on demand (urgent)                   ${formatBytes(Number(blocks.bytesFetchedDemand ?? 0))}`);
  out(`  bytes moved in bulk                              ${formatBytes(Number(blocks.bytesFetchedBulk ?? 0))}`);
  out(`  zero bytes skipped (never sent)                  ${formatBytes(Number(blocks.zeroBytesSkipped ?? 0))}`);
  out(`  demand fetch latency p50 / p99 / max             ${ms(lat.p50Ms)} / ${ms(lat.p99Ms)} / ${ms(lat.maxMs)} ms (${lat.count ?? 0} misses)`);
  out(`  miss p99: S + wire seen by D / S alone           ${stageP99(blocks.demandStages, 'socket-to-reply')} / ${stageP99(srcSummary?.urgentStages, 'total')} ms (every stage: summaries' demandStages, urgentStages)`);
  out(`  guest on D: reads / writes / read mismatches     ${guest.reads ?? '?'} / ${guest.writes ?? '?'} / ${guest.readMismatches ?? '?'} (read p50/p99 ${ms(guestLat.p50Ms)} / ${ms(guestLat.p99Ms)} ms)`);
  out(`  wall time (both agents, start to exit)           ${(wallMs / 1000).toFixed(2)} s`);
  out(
    `  verification                                     ${verify.ok ? 'PASSED' : 'FAILED'}: ${verify.blocksChecked} blocks, ` +
      `${verify.unitsOverlaid} guest-written units overlaid, ${verify.mismatchedBlocks} mismatched`,
  );
  for (const m of verify.mismatches.slice(0, 5)) out(`    mismatch at ${m.offset}: expected ${m.expected}${m.found ? `, found data of offset ${m.found.offset} gen ${m.found.generation}` : ''}`);
  const ok = verify.ok && Number(guest.readMismatches ?? 0) === 0;
  if (!values.keep && !dirArg && ok) rmSync(dir, { recursive: true, force: true });
  else out(`  work directory kept: ${dir}`);
  return ok ? EXIT.OK : EXIT.VERIFY_FAILED;
}

function ms(v: number | undefined): string {
  return v === undefined ? '?' : v.toFixed(2);
}

function spawnAgent(main: string, args: string[], logPath: string): ChildProcess {
  writeFileSync(logPath, '');
  const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, main, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (chunk: Buffer) => writeFileSync(logPath, chunk, { flag: 'a' }));
  return child;
}

function exitCode(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
}

function readEvents(path: string): DemoEvent[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim().length > 0)
    .map((l) => JSON.parse(l) as DemoEvent);
}

function lastEvent(path: string, name: string): Record<string, unknown> | undefined {
  return readEvents(path).filter((e) => e.event === name).pop();
}

/** Print phase changes, and D's progress (its bar on a terminal, else a line every few seconds), as the agents write their events. */
function watchEvents(files: string[], out: (line: string) => void, view: ProgressView<DestSample>): { stop(): void } {
  const seen = new Map<string, number>();
  let lastProgress = 0;
  const tick = () => {
    for (const f of files) {
      const events = readEvents(f);
      const from = seen.get(f) ?? 0;
      for (const e of events.slice(from)) {
        if (e.event === 'phase') out(`  [${e.role}] phase ${String(e.phase)}${e.error ? ` (${String(e.error)})` : ''}`);
        else if (e.event === 'cutover' && e.role === 'source') out(`  [source] cut-over: downtime ${String(e.downtimeMs)} ms`);
        else if (e.event === 'link' && e.state !== 'up') out(`  [${e.role}] link ${String(e.state)}`);
        else if (e.event === 'ram-round' && e.role === 'source') view.ramRound(e as unknown as RamRound);
        else if (e.event === 'progress' && e.role === 'dest' && view.mode === 'bar') view.update(e as unknown as DestSample);
        else if (e.event === 'progress' && e.role === 'dest' && Date.now() - lastProgress > DEMO_PROGRESS_EVERY_MS && e.phase === 'postcopy') {
          lastProgress = Date.now();
          out(`  [dest] ${e.blocksPresent}/${e.blocksTotal} blocks present, ${formatBytes(Number(e.bytesOnlyOnSource))} only on the source`);
        }
      }
      seen.set(f, events.length);
    }
  };
  const timer = setInterval(tick, DEMO_EVENTS_POLL_MS);
  return {
    stop() {
      clearInterval(timer);
      tick();
    },
  };
}

/** A stage's p99 in ms from a summary's stage table (demandStages / urgentStages), or '?'. */
function stageP99(stages: unknown, stage: string): string {
  const p99 = (stages as Record<string, { p99Ms?: number }> | undefined)?.[stage]?.p99Ms;
  return typeof p99 === 'number' ? p99.toFixed(2) : '?';
}
