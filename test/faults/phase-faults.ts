// Faults aimed at named phases of a migration, for the fault layer on D's socket (FaultDuplex's hook): the frame
// headers crossing each way are read with the codec's own header reader, the phase advances on the frames that
// open it, and a fault fires k bytes (in its direction) after its phase opened. Records which faults fired, in
// which phase, and how many bytes each phase carried each way (a fault-free run's figures size the offsets).
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
  /** Bytes crossing in `dir` after the phase opened before the fault fires (cut/stall before byte k, flip byte k). */
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
  #armed: Armed[] = [];
  readonly fired: FiredFault[] = [];
  /** Bytes each phase carried each way. */
  readonly bytes: Record<WirePhase, Record<Dir, number>>;
  #conns = 0;

  constructor(faults: readonly AimedFault[]) {
    this.#faults = faults;
    this.bytes = Object.fromEntries(ORDER.map((p) => [p, { s2d: 0, d2s: 0 }])) as Record<WirePhase, Record<Dir, number>>;
    this.#open('handshake', { s2d: 0, d2s: 0 });
  }

  get phase(): WirePhase {
    return this.#phase;
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
    let counted = 0; // bytes of this chunk already added to a phase's tally
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
      const opens = OPENERS.find((o) => o.dir === dir && o.type === edge.type && o.edge === edge.edge && ORDER.indexOf(o.phase) > ORDER.indexOf(this.#phase));
      if (!opens) continue;
      this.bytes[this.#phase][dir] += edge.pos - counted;
      counted = edge.pos;
      const at = { ...this.#crossed, [dir]: base + edge.pos };
      this.#open(opens.phase, at);
    }
    this.bytes[this.#phase][dir] += end - counted;
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

  #open(phase: WirePhase, at: Record<Dir, number>): void {
    this.#phase = phase;
    for (const f of this.#faults) if (f.phase === phase) this.#armed.push({ fault: f, target: at[f.dir] + f.at });
  }
}
