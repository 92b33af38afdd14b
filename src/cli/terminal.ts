// The operator's view of a migration on stderr: on a terminal a status line redrawn in place with every other line
// (logs, notices) written whole above it; off a terminal, with --progress, plain progress lines; else nothing.
import type { JsonLinesEvents } from '../common/events.js';
import { RateMeter } from '../common/rate-meter.js';
import { LineStepper, statusText, type Outcome, type RamRound, type Side } from './progress.js';

export type Write = (text: string) => void;

/** ECMA-48 EL: erase from the cursor to the end of the line (what is left of a longer line drawn before). */
const ERASE_TO_END = '\x1b[K';
/** Columns assumed when the terminal does not say. */
const DEFAULT_COLUMNS = 80;

/** The status line on screen now, if any: a crash's message must not be written into it. */
let active: StatusLine | null = null;

/** A process's last words on stderr: a status line still drawn is ended first, as it last read. */
export function writeLastLines(text: string): void {
  active?.end();
  process.stderr.write(text);
}

/** The terminal's last line, redrawn in place; text written through `above` scrolls up over it. */
export class StatusLine {
  readonly #write: Write;
  readonly #columns: () => number | undefined;
  #shown: string | null = null;

  constructor(write: Write, columns: () => number | undefined) {
    this.#write = write;
    this.#columns = columns;
  }

  show(line: string): void {
    // One column short of the width: a line that fills it would wrap (on some terminals) and \r could not reach it.
    this.#shown = line.slice(0, Math.max(1, (this.#columns() || DEFAULT_COLUMNS) - 1));
    active = this;
    this.#write(`\r${this.#shown}${ERASE_TO_END}`);
  }

  /** Whole lines above the status line, which is drawn again below them (one write: nothing can come between). */
  above(text: string): void {
    const lines = text.endsWith('\n') ? text : `${text}\n`;
    this.#write(this.#shown === null ? lines : `\r${ERASE_TO_END}${lines}${this.#shown}${ERASE_TO_END}`);
  }

  /** Draw the last state (if given) and end the line: what follows is written as plain lines. */
  end(line?: string): void {
    if (line !== undefined) this.show(line);
    if (this.#shown !== null) this.#write('\n');
    this.#shown = null;
    if (active === this) active = null;
  }
}

/**
 * How progress shows: a bar on a terminal (unless CI=true, whose logs may be captured through a pty; --progress asks
 * for it anyway), plain lines off a terminal with --progress, else nothing. A terminal that cannot erase a line
 * (TERM=dumb) gets the plain lines.
 */
export type ProgressMode = 'bar' | 'lines' | 'off';

export function progressMode(o: { flag: boolean; isTTY: boolean; env: NodeJS.ProcessEnv }): ProgressMode {
  if (o.isTTY && o.env.TERM !== 'dumb') return o.flag || o.env.CI !== 'true' ? 'bar' : 'off';
  return o.flag ? 'lines' : 'off';
}

export interface ViewOutput {
  write: Write;
  columns: () => number | undefined;
  now: () => number;
}

const STDERR: ViewOutput = { write: (t) => void process.stderr.write(t), columns: () => process.stderr.columns, now: () => performance.now() };

/** A migration's progress on stderr, for one side. */
export class ProgressView<S> {
  readonly mode: ProgressMode;
  readonly #side: Side<S>;
  readonly #out: ViewOutput;
  readonly #line: StatusLine | null;
  readonly #stepper = new LineStepper();
  readonly #demand = new RateMeter();
  readonly #bulk = new RateMeter();
  #ram: RamRound | null = null;
  /** The last sample shown, drawn again when a RAM round ends between samples. */
  #last: S | null = null;
  #finished = false;

  constructor(side: Side<S>, mode: ProgressMode, out: ViewOutput = STDERR) {
    this.#side = side;
    this.mode = mode;
    this.#out = out;
    this.#line = mode === 'bar' ? new StatusLine(out.write, out.columns) : null;
  }

  /** Where log records go as readable lines (above the bar); undefined: they stay pino JSON on stderr. */
  get logAbove(): Write | undefined {
    const line = this.#line;
    return line ? (text) => line.above(text) : undefined;
  }

  /** A line for the operator (a notice, a refusal) that must not tear the bar. */
  say(text: string): void {
    if (this.#line) this.#line.above(text);
    else this.#out.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** A pre-copy round ended (a `ram-round` event): shown at once, rounds can be shorter than the interval. */
  ramRound(r: RamRound): void {
    this.#ram = r;
    if (this.#last !== null) this.update(this.#last);
  }

  update(sample: S): void {
    if (this.mode === 'off' || this.#finished) return;
    this.#last = sample;
    const t = this.#out.now();
    const c = this.#side.counters(sample);
    const status = this.#side.status(sample, { demand: this.#demand.sample(t, c.demand), bulk: this.#bulk.sample(t, c.bulk) }, this.#ram);
    if (this.#line) this.#line.show(statusText(status, true));
    else if (this.#stepper.due(status, t)) this.#out.write(`${this.#side.label}: ${statusText(status, false)}\n`);
  }

  /** The final state, drawn before the line ends (a bar stopped at its last tick would read 99 %). Once. */
  finish(sample: S | null, outcome: Outcome): void {
    if (this.mode === 'off' || this.#finished) return;
    this.#finished = true;
    const text = sample === null ? undefined : statusText(this.#side.status(sample, { demand: 0, bulk: 0 }, this.#ram, outcome), this.#line !== null);
    if (this.#line) this.#line.end(text);
    else if (text !== undefined) this.#out.write(`${this.#side.label}: ${text}\n`);
  }
}

/** The view of a command on this process's stderr, told of pre-copy rounds by the command's events. */
export function openProgressView<S>(side: Side<S>, flag: boolean, events: JsonLinesEvents): ProgressView<S> {
  const view = new ProgressView(side, progressMode({ flag, isTTY: process.stderr.isTTY === true, env: process.env }));
  events.onEvent((event, fields) => {
    if (event === 'ram-round') view.ramRound(fields as unknown as RamRound);
  });
  return view;
}
