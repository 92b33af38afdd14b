// A disk that can lose power (STYLE.md 12), as a layer around D's image and present-bitmap writes and syncs: writes
// reach the real file at once (readers see them, as through the page cache) and the layer remembers what each one
// overwrote until its file's next completed fdatasync. crash() is the power cut: the layer freezes (later writes are
// dropped, syncs in flight or to come never settle) and the files are put back as the disk would hold them: every
// unsynced write undone ('lost'), or for each page a seeded point in its history of unsynced writes ('torn': the
// page cache writes back whole pages, at any time, with their content of that moment).
//
// Only writes and syncs made through this layer can be lost. Files D writes another way are durable when written:
// the bitmap's creation (written and fdatasync'd before PresentBitmap.create returns) and the session file
// (src/common/state-file.ts: temp file, fsync, rename, directory fsync, all before writeStateFile returns: a cut
// during it leaves the old or the new file, never a mix). Metadata is not modelled (the image's size and its
// directory entry): see the report of the crash-consistency property.
import { imageWriteIo, readFully, writeFully, type ImageWriteIo } from '../../src/common/file-io.js';
import { sfc32 } from '../helpers/sfc32.js';

export type LossMode = 'lost' | 'torn';

/** Where the power goes: before the n-th (1-based) write, sync call, or sync completion through the layer. */
export interface CrashPoint {
  kind: 'write' | 'sync' | 'synced';
  n: number;
}

export interface CrashDiskOptions {
  inner?: ImageWriteIo;
  crashAt?: CrashPoint | null;
  loss?: LossMode;
  /** Seeds the torn pages. */
  seed?: number;
  /** Granularity of a torn write. */
  pageBytes?: number;
  /** Each sync takes at least this long (a real disk's flush is not instant; writes arrive meanwhile). */
  syncDelayMs?: number;
  /** Told once the power is cut and the files are as after the cut (the test stops the "dead" process here). */
  onCrash?: (report: CrashReport) => void;
}

export interface CrashReport {
  at: string;
  loss: LossMode;
  /** Writes not yet covered by a completed sync when the power went. */
  unsyncedWrites: number;
  /** Pages those writes touched, and how many of them came back as they were at the last sync. */
  pagesTouched: number;
  pagesLost: number;
}

interface PendingWrite {
  seq: number;
  position: number;
  old: Buffer;
  data: Buffer;
}

const NEVER = new Promise<never>(() => {});

export class CrashDisk implements ImageWriteIo {
  writes = 0;
  syncCalls = 0;
  syncsDone = 0;
  report: CrashReport | null = null;
  readonly #inner: ImageWriteIo;
  readonly #o: CrashDiskOptions;
  readonly #pending = new Map<number, PendingWrite[]>();
  #seq = 0;

  constructor(opts: CrashDiskOptions = {}) {
    this.#inner = opts.inner ?? imageWriteIo;
    this.#o = opts;
  }

  get crashed(): boolean {
    return this.report !== null;
  }

  write(fd: number, data: Buffer, position: number): void {
    if (this.crashed) return;
    if (this.#due('write', ++this.writes)) return;
    const old = readFully(fd, position, data.length);
    this.#inner.write(fd, data, position);
    let list = this.#pending.get(fd);
    if (!list) this.#pending.set(fd, (list = []));
    list.push({ seq: this.#seq++, position, old, data: Buffer.from(data) });
  }

  async sync(fd: number): Promise<void> {
    if (this.crashed || this.#due('sync', ++this.syncCalls)) return NEVER;
    // What this sync makes durable: the writes issued before it was called, not those made while it runs.
    const upTo = this.#seq;
    if (this.#o.syncDelayMs) await new Promise((r) => setTimeout(r, this.#o.syncDelayMs));
    if (this.crashed) return NEVER;
    try {
      await this.#inner.sync(fd);
    } catch (e) {
      if (this.crashed) return NEVER;
      throw e;
    }
    if (this.crashed || this.#due('synced', ++this.syncsDone)) return NEVER;
    const list = this.#pending.get(fd);
    if (list) this.#pending.set(fd, list.filter((w) => w.seq >= upTo));
  }

  /** Cut the power now (the crash point, or a test's own moment): returns what was lost. */
  crash(at = 'on demand'): CrashReport {
    if (this.report) return this.report;
    const loss = this.#o.loss ?? 'lost';
    const random = sfc32(this.#o.seed ?? 1);
    const report: CrashReport = { at, loss, unsyncedWrites: 0, pagesTouched: 0, pagesLost: 0 };
    for (const [fd, list] of this.#pending) {
      report.unsyncedWrites += list.length;
      const torn = tearPages(list, this.#o.pageBytes ?? 4096, loss === 'lost' ? () => 0 : (n) => random() % (n + 1));
      report.pagesTouched += torn.pages;
      report.pagesLost += torn.lost;
      // Back to the last synced content, then forward again with what each page kept.
      for (let i = list.length - 1; i >= 0; i--) writeFully(fd, list[i]!.old, list[i]!.position);
      for (const [position, bytes] of torn.kept) writeFully(fd, bytes, position);
    }
    this.#pending.clear();
    this.report = report;
    this.#o.onCrash?.(report);
    return report;
  }

  #due(kind: CrashPoint['kind'], n: number): boolean {
    const p = this.#o.crashAt;
    if (!p || p.kind !== kind || p.n !== n) return false;
    this.crash(`before ${kind} #${n}`);
    return true;
  }
}

/**
 * For each page the writes touched, keep its first `choose(n)` writes of the n there (0: the page is as at the last
 * sync); returns the bytes to put back over the synced content, in write order.
 */
function tearPages(list: readonly PendingWrite[], pageBytes: number, choose: (n: number) => number): { pages: number; lost: number; kept: Array<[number, Buffer]> } {
  const writesPerPage = new Map<number, number>();
  for (const w of list) forEachPage(w, pageBytes, (p) => writesPerPage.set(p, (writesPerPage.get(p) ?? 0) + 1));
  const keep = new Map<number, number>();
  let lost = 0;
  for (const [p, n] of writesPerPage) {
    const k = choose(n);
    keep.set(p, k);
    if (k === 0) lost++;
  }
  const kept: Array<[number, Buffer]> = [];
  for (const w of list) {
    forEachPage(w, pageBytes, (p, from, to) => {
      const left = keep.get(p)!;
      if (left === 0) return;
      keep.set(p, left - 1);
      kept.push([from, w.data.subarray(from - w.position, to - w.position)]);
    });
  }
  return { pages: writesPerPage.size, lost, kept };
}

function forEachPage(w: PendingWrite, pageBytes: number, fn: (page: number, from: number, to: number) => void): void {
  const end = w.position + w.data.length;
  for (let p = Math.floor(w.position / pageBytes); p * pageBytes < end; p++) {
    fn(p, Math.max(w.position, p * pageBytes), Math.min(end, (p + 1) * pageBytes));
  }
}
