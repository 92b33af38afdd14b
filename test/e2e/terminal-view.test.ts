// The terminal view of both sides as an operator sees it: real `postcopy dest` and `postcopy source`, each on its own
// pty (util-linux `script`), with a simulated guest and info logs coming while the bars are drawn. The raw output is
// replayed to the final screen text: each bar ends at 100 %, nothing reads NaN or Infinity, and every log line is a
// whole readable line of its own (not JSON, not inside a bar). `--progress` draws the bar under CI=true too.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { shellQuote } from '../../src/common/shell.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { assertTools, skipWithout } from '../nbd/helpers/tools.js';
import { screenLines } from '../helpers/screen.js';
import { CLI, freePort, Teardown, waitForEvent, workDir, type Agent } from './helpers/processes.js';

const MiB = 1024 * 1024;
/** Wide enough that no status line is cut: the test reads the whole final line. */
const COLUMNS = 220;
/** A readable log line as pino-pretty writes it: time, level, message. */
const LOG_LINE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL): \S/;
const BAR_END = /^\[#{30}\] 100\.0% /;

const teardown = new Teardown();
afterEach(() => teardown.run());

/** `postcopy ARGS` on a new pty whose output `script` copies, raw, into `rawPath`. */
function onPty(args: string[], rawPath: string): Agent {
  const command = [process.execPath, ...AGENT_NODE_FLAGS, CLI, ...args].map(shellQuote).join(' ');
  // The pty starts 0x0 (script's stdin is no terminal): give it a size, as a terminal window has. CI=true as in CI,
  // where only --progress draws the bar.
  const child = spawn('script', ['-qfec', `stty cols ${COLUMNS} rows 50; exec ${command}`, rawPath], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CI: 'true' } });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) => child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })));
  return { child, stderr: () => err, exit };
}

/** The final screen, without the header and footer `script` puts in its file. */
function screenOf(raw: string): string[] {
  return screenLines(raw).filter((l) => l.length > 0 && !/^Script (started|done) on /.test(l));
}

/** What every side's screen must show: one final 100 % line, every other line a whole readable log line. */
function expectCleanScreen(raw: string, side: string): string[] {
  expect(raw, `${side}: NaN or Infinity drawn`).not.toMatch(/NaN|Infinity/);
  // A log record came while a bar was on screen: the line was cleared first and the record written from its start.
  expect(raw, `${side}: no log line came while the bar was drawn`).toMatch(/\r\x1b\[K\[\d\d:\d\d:\d\d\.\d{3}\] /);
  const screen = screenOf(raw);
  const bars = screen.filter((l) => !LOG_LINE.test(l));
  expect(bars, `${side} screen:\n${screen.join('\n')}`).toHaveLength(1);
  expect(bars[0]).toMatch(BAR_END);
  // Logs are whole lines: none is JSON, and no time stamp appears anywhere but at a line's start.
  for (const l of screen) {
    expect(l.startsWith('{'), l).toBe(false);
    expect(l.slice(1), l).not.toMatch(/\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN)/);
  }
  return screen;
}

describe.skipIf(skipWithout(['script']))('the terminal view on a pty', () => {
  it('draws both bars to 100 % with logs whole above them, under CI=true too', async () => {
    assertTools(['script']);
    const w = workDir('tty');
    teardown.later(w.cleanup);
    const src = join(w.dir, 'src.img');
    const dst = join(w.dir, 'dst.img');
    const dEvents = join(w.dir, 'd.jsonl');
    const dRaw = join(w.dir, 'dest.raw');
    const sRaw = join(w.dir, 'source.raw');
    generateDemoImage(src, 64 * MiB, 5);
    const port = await freePort();
    // A short interval: the bar is drawn well before the first log line of the migration.
    const common = ['--ticket-file', w.ticket, '--progress', '--progress-interval', '50', '--log-level', 'info'];
    const dest = teardown.agent(onPty(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--events', dEvents, ...common], dRaw));
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const source = teardown.agent(
      onPty(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--guest', 'sim', '--ram', '32M', '--dirty-rate', '2000', '--disk-ops', '300', ...common], sRaw),
    );
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    const dScreen = readFileSync(dRaw, 'utf8');
    const sScreen = readFileSync(sRaw, 'utf8');
    expect(s.code, `${source.stderr()}\n${screenOf(sScreen).join('\n')}`).toBe(0);
    expect(d.code, `${dest.stderr()}\n${screenOf(dScreen).join('\n')}`).toBe(0);

    const dLines = expectCleanScreen(dScreen, 'dest');
    expect(dLines.some((l) => /INFO: guest running on destination/.test(l))).toBe(true);
    expect(dLines.find((l) => BAR_END.test(l))).toMatch(/ \| fetched \d/);
    const sLines = expectCleanScreen(sScreen, 'source');
    expect(sLines.some((l) => /INFO: pre-copy round \{"round":1,/.test(l))).toBe(true);
    expect(sLines.find((l) => BAR_END.test(l))).toMatch(/^\S+ 100\.0% confirmed \| served \d/);
  });
});
