// Faults aimed at named phases of a migration, for the fault layer on D's socket (FaultDuplex's hook): the frame
// headers crossing each way are read with the codec's own header reader, the phase advances on the frames that
// open it, and a fault fires k bytes (in its direction) after its phase opened (or a frame inside it crossed:
// ANCHORS). Records which faults fired, in which phase, and how many bytes each phase carried each way from
// there (a fault-free run's figures size the offsets).
import { readFrameHeader } from '../../src/protocol/frame-codec.js';
import { FRAME_HEADER_SIZE, MSG } from '../../src/protocol/constants.js';
import type { ChunkDir, ChunkVerdict } from './fault-duplex.js';

/** The phases a fault can aim at, in the order a migration goes through them. */
export const PHASES = ['handshake', 'prepare', 'ram', 'finish-window', 'early-postcopy', 'final-check', 'complete-confirm'] as const;
export type Phase = (typeof PHASES)[number];
/** After S's CONFIRM has crossed: nothing left to aim at. */
export type WirePhase = Phase | 'done';

/** S→D is what D reads ('in' on D's socket), D→S what D writes. */
export type Dir = 's2d' | 'd2s';
export const DIRS: readonly Dir[] = ['s2d', 'd2s'];
const DIR_OF: Record<ChunkDir, Dir> = { in: 's2d', out: 'd2s' };

export type FaultKind = 'cut' | 'stall' | 'flip' | 'delay';
export const FAULT_KINDS: readonly FaultKind[] = ['cut', 'stall', 'flip', 'delay'];

export interface AimedFault {
  phase: Phase;
  dir: Dir;
  kind: FaultKind;
  /**
   * Bytes crossing in `dir` after the phase opened (or its anchor crossed, see ANCHORS) before the fault fires:
   * cut or stall before byte k, flip byte k, delay from the chunk holding byte k.
   */
  at: number;
  /** For 'delay': how long each chunk in `dir` is held from then on (that connection only). */
  delayMs: number;
}

export interface FiredFault extends AimedFault {
  /** The phase the wire was in when it fired (the aimed one unless the phase carried fewer bytes than `at`). */
  firedIn: WirePhase;
  /** D's connection number (0 = the first). */
  conn: number;
}

/**
 * Frames that open a phase, seen on D's socket. A phase opens once: the first opener after the current phase
 * wins, so a phase whose openers never cross is skipped. 'start' is when the frame's header has crossed, 'end'
 * when its last byte has. After a reconnect past cut-over no FINISH_RESULT comes: S's EXTENTS or D's first
 * BLOCK_REQ open post-copy then.
 */
const OPENERS: ReadonlyArray<{ phase: WirePhase; dir: Dir; type: number; edge: 'start' | 'end' }> = [
  { phase: 'prepare', dir: 's2d', type: MSG.BEGIN, edge: 'start' },
  { phase: 'ram', dir: 's2d', type: MSG.RAM_PAGES, edge: 'start' },
  { phase: 'finish-window', dir: 's2d', type: MSG.DEVICE_STATE, edge: 'start' },
  { phase: 'early-postcopy', dir: 'd2s', type: MSG.FINISH_RESULT, edge: 'end' },
  { phase: 'early-postcopy', dir: 's2d', type: MSG.EXTENTS, edge: 'start' },
  { phase: 'early-postcopy', dir: 'd2s', type: MSG.BLOCK_REQ, edge: 'start' },
  { phase: 'final-check', dir: 'd2s', type: MSG.BLOCK_DIGESTS, edge: 'start' },
  { phase: 'complete-confirm', dir: 'd2s', type: MSG.COMPLETE, edge: 'start' },
  { phase: 'done', dir: 's2d', type: MSG.CONFIRM, edge: 'end' },
];
const ORDER: readonly WirePhase[] = [...PHASES, 'done'];

/**
 * (phase, direction) pairs whose faults count from a frame inside the phase, not from its opening. D→S in the
 * finish window: from D's answer (FINISH_RESULT), which is what the window is about; bytes D sends before it
 * (a CREDIT, a PONG) come and go from run to run, and a cut there is a cut before D resumed, as S→D faults are.
 */
const ANCHORS: ReadonlyArray<{ phase: Phase; dir: Dir; type: number; edge: 'start' | 'end' }> = [
  { phase: 'finish-window', dir: 'd2s', type: MSG.FINISH_RESULT, edge: 'start' },
];
const anchored = (phase: WirePhase, dir: Dir) => ANCHORS.some((a) => a.phase === phase && a.dir === dir);

interface FrameEdge {
  /** Offset in the chunk just after the edge (after the header's last byte, or the payload's). */
  pos: number;
  type: number;
  edge: 'start' | 'end';
}

/** Follows frame boundaries in one direction of one connection, chunks split anywhere. */
class FrameScanner {
  readonly #head = Buffer.alloc(FRAME_HEADER_SIZE);
  #have = 0;
  #left = 0;
  #type = 0;
  #dead = false;

  feed(chunk: Buffer): FrameEdge[] {
    const edges: FrameEdge[] = [];
    let p = 0;
    while (p < chunk.length && !this.#dead) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, chunk.length - p);
        p += n;
        this.#left -= n;
        if (this.#left === 0) edges.push({ pos: p, type: this.#type, edge: 'end' });
        continue;
      }
      const n = Math.min(FRAME_HEADER_SIZE - this.#have, chunk.length - p);
      chunk.copy(this.#head, this.#have, p, p + n);
      this.#have += n;
      p += n;
      if (this.#have < FRAME_HEADER_SIZE) break;
      this.#have = 0;
      try {
        const h = readFrameHeader(this.#head);
        this.#type = h.type;
        this.#left = h.length;
      } catch {
        this.#dead = true; // not our wire (cannot happen on bytes as sent): stop following it
        break;
      }
      edges.push({ pos: p, type: this.#type, edge: 'start' });
      if (this.#left === 0) edges.push({ pos: p, type: this.#type, edge: 'end' });
    }
    return edges;
  }
}

interface Armed {
  fault: AimedFault;
  /** Global byte count in the fault's direction (over every connection) at which it fires. */
  target: number;
}

/** One migration's phase tracker and fault injector, shared by every connection D accepts. */
export class PhaseFaults {
  readonly #faults: readonly AimedFault[];
  #phase: WirePhase = 'handshake';
  /** Bytes that have crossed in each direction, over all connections. */
  readonly #crossed: Record<Dir, number> = { s2d: 0, d2s: 0 };
  /** Where the current phase's faults count from in each direction (null: its anchor has not crossed yet). */
  #from: Record<Dir, number | null> = { s2d: 0, d2s: 0 };
  #armed: Armed[] = [];
  readonly fired: FiredFault[] = [];
  /** Bytes each phase carried each way, counted from where its faults count from (phases that are over). */
  readonly #bytes: Record<WirePhase, Record<Dir, number>>;
  #conns = 0;

  constructor(faults: readonly AimedFault[]) {
    this.#faults = faults;
    this.#bytes = Object.fromEntries(ORDER.map((p) => [p, { s2d: 0, d2s: 0 }])) as Record<WirePhase, Record<Dir, number>>;
    this.#open('handshake', { s2d: 0, d2s: 0 });
  }

  get phase(): WirePhase {
    return this.#phase;
  }

  /** Bytes each phase carried each way so far: what a fault's `at` is drawn below. */
  get bytes(): Record<WirePhase, Record<Dir, number>> {
    const out = structuredClone(this.#bytes);
    for (const d of DIRS) out[this.#phase][d] = this.#carried(d, this.#crossed[d]);
    return out;
  }

  /** The hook for D's next accepted connection (FaultDuplex's `hook`). */
  connection(): (dir: ChunkDir, chunk: Buffer) => ChunkVerdict {
    const conn = this.#conns++;
    const scanners: Record<Dir, FrameScanner> = { s2d: new FrameScanner(), d2s: new FrameScanner() };
    return (cdir, chunk) => this.#chunk(conn, DIR_OF[cdir], scanners[DIR_OF[cdir]], chunk);
  }

  #chunk(conn: number, dir: Dir, scanner: FrameScanner, chunk: Buffer): ChunkVerdict {
    const base = this.#crossed[dir];
    const edges = scanner.feed(chunk);
    let data = chunk;
    let end = chunk.length;
    let then: ChunkVerdict['then'];
    let delayMs: number | undefined;
    let e = 0;
    for (;;) {
      const next = this.#nextArmed(dir, base + end);
      const edge = edges[e];
      if (next && (edge === undefined || next.target - base <= edge.pos)) {
        const rel = next.target - base;
        this.#armed = this.#armed.filter((a) => a !== next);
        this.fired.push({ ...next.fault, firedIn: this.#phase, conn });
        const f = next.fault;
        if (f.kind === 'cut' || f.kind === 'stall') {
          end = rel;
          then = f.kind;
          break;
        }
        if (f.kind === 'flip') {
          if (data === chunk) data = Buffer.from(chunk);
          data[rel]! ^= 0x10;
        } else {
          delayMs = f.delayMs;
        }
        continue;
      }
      if (edge === undefined || edge.pos > end) break;
      e++;
      const at = base + edge.pos;
      const opens = OPENERS.find((o) => o.dir === dir && o.type === edge.type && o.edge === edge.edge && ORDER.indexOf(o.phase) > ORDER.indexOf(this.#phase));
      if (opens) {
        this.#open(opens.phase, { ...this.#crossed, [dir]: at });
        continue;
      }
      const phase = this.#phase;
      if (this.#from[dir] === null && ANCHORS.some((a) => a.phase === phase && a.dir === dir && a.type === edge.type && a.edge === edge.edge)) {
        this.#arm(dir, at);
      }
    }
    this.#crossed[dir] = base + end;
    return { data: end === chunk.length ? data : data.subarray(0, end), ...(then ? { then } : {}), ...(delayMs !== undefined ? { delayMs } : {}) };
  }

  /** The armed fault in `dir` that fires first, if it fires before global byte `limit`. */
  #nextArmed(dir: Dir, limit: number): Armed | undefined {
    let best: Armed | undefined;
    for (const a of this.#armed) {
      if (a.fault.dir === dir && a.target < limit && (!best || a.target < best.target)) best = a;
    }
    return best;
  }

  /** Bytes the current phase has carried in `dir` up to global byte `upTo`. */
  #carried(dir: Dir, upTo: number): number {
    const from = this.#from[dir];
    return from === null ? 0 : upTo - from;
  }

  #open(phase: WirePhase, at: Record<Dir, number>): void {
    for (const d of DIRS) this.#bytes[this.#phase][d] = this.#carried(d, at[d]);
    this.#phase = phase;
    this.#from = { s2d: null, d2s: null };
    for (const d of DIRS) if (!anchored(phase, d)) this.#arm(d, at[d]);
  }

  /** The current phase's faults in `dir` count from global byte `at`. */
  #arm(dir: Dir, at: number): void {
    this.#from[dir] = at;
    for (const f of this.#faults) if (f.phase === this.#phase && f.dir === dir) this.#armed.push({ fault: f, target: at + f.at });
  }
}
