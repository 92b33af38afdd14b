// Micro tier: the hot pure code paths in one process, at 4 KiB .. 4 MiB: the migration frame codec (BLOCK_DATA
// encode, streaming decode), the NBD codec (READ reply chunk, WRITE request), and D's block store (fetched data
// written + present bits; guest writes). Each figure is the median (min–max) of several timed samples.
import { mkdirSync, openSync, closeSync, writeSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathIdentity } from '../src/common/image-identity.js';
import { silentLogger } from '../src/common/logger.js';
import { BlockStore } from '../src/dest/block-store.js';
import type { Fetcher, FetchSink } from '../src/dest/fetcher.js';
import { PresentBitmap } from '../src/dest/present-bitmap.js';
import { ClientDecoder } from '../src/nbd/client-decoder.js';
import { encodeGreeting, encodeOffsetDataHeader, encodeRequest } from '../src/nbd/codec.js';
import * as NC from '../src/nbd/constants.js';
import { ServerDecoder } from '../src/nbd/server-decoder.js';
import { BULK_CHUNK_BYTES } from '../src/protocol/constants.js';
import { FrameDecoder } from '../src/protocol/frame-codec.js';
import { decodeMessage, encodeBlockData } from '../src/protocol/messages.js';
import { spread, type Spread } from './lib/stats.js';
import { GiB, KiB, MiB, mib as toMiB, sec } from './lib/units.js';

export const MICRO_SIZES = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
/** Sockets hand the receiver about this much at a time on loopback. */
const SOCKET_CHUNK = 64 * KiB;

export interface MicroRow {
  bench: string;
  size: number;
  mibPerSec: Spread;
  opsPerSec: Spread;
  note?: string;
}

export interface MicroOptions {
  samples: number;
  sampleMs: number;
  workDir: string;
}

function randomish(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ 0x5bd1e995) >>> 0, i);
  return b;
}

function split(wire: Buffer, chunk: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < wire.length; at += chunk) out.push(wire.subarray(at, Math.min(wire.length, at + chunk)));
  return out;
}

/** Run op repeatedly for sampleMs per sample; a sample's rate is bytes (ops) over its time. */
function measureSync(bytesPerOp: number, op: () => void, o: MicroOptions): { mib: Spread; ops: Spread } {
  const warmEnd = performance.now() + Math.min(100, o.sampleMs);
  while (performance.now() < warmEnd) op();
  const mib: number[] = [];
  const ops: number[] = [];
  for (let s = 0; s < o.samples; s++) {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < o.sampleMs) {
      for (let i = 0; i < 8; i++) op();
      n += 8;
      t = performance.now();
    }
    const secs = sec(t - t0);
    mib.push(toMiB(n * bytesPerOp) / secs);
    ops.push(n / secs);
  }
  return { mib: spread(mib), ops: spread(ops) };
}

function frameBenches(size: number, o: MicroOptions): MicroRow[] {
  const data = randomish(size);
  let id = 1;
  const enc = measureSync(size, () => {
    encodeBlockData(id++, 0, data, true, false);
  }, o);
  const wire = Buffer.concat(encodeBlockData(7, 0, data, true, false));
  const chunks = split(wire, SOCKET_CHUNK);
  const dec = new FrameDecoder();
  const decode = measureSync(size, () => {
    for (const c of chunks) for (const f of dec.push(c)) decodeMessage(f);
  }, o);
  return [
    { bench: 'frame encode (BLOCK_DATA, CRC-32)', size, mibPerSec: enc.mib, opsPerSec: enc.ops },
    { bench: 'frame decode (64 KiB socket chunks)', size, mibPerSec: decode.mib, opsPerSec: decode.ops },
  ];
}

function nbdBenches(size: number, o: MicroOptions): MicroRow[] {
  const data = randomish(size);
  // Client side: a structured READ reply (OFFSET_DATA chunk), as a server sends it, decoded from socket-sized chunks.
  const cd = new ClientDecoder({ simpleReplyLength: () => size, knownCookie: () => true });
  cd.push(encodeGreeting(NC.NBD_FLAG_FIXED_NEWSTYLE));
  if (cd.next()?.type !== 'greeting') throw new Error('greeting not decoded');
  cd.enterTransmission(true);
  let cookie = 1n;
  const reply = measureSync(size, () => {
    const hdr = encodeOffsetDataHeader(cookie++, NC.NBD_REPLY_FLAG_DONE, 0, size);
    cd.push(hdr);
    for (const c of split(data, SOCKET_CHUNK)) cd.push(c);
    while (cd.next());
  }, o);
  // Server side: a WRITE request with its payload.
  const sd = new ServerDecoder({ maxPayload: 32 << 20 });
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(NC.NBD_FLAG_C_FIXED_NEWSTYLE, 0);
  sd.push(flags);
  if (sd.next()?.type !== 'clientFlags') throw new Error('client flags not decoded');
  sd.enterTransmission();
  const write = measureSync(size, () => {
    sd.push(encodeRequest({ flags: 0, command: NC.NBD_CMD_WRITE, cookie: cookie++, offset: 0, length: size }));
    for (const c of split(data, SOCKET_CHUNK)) sd.push(c);
    while (sd.next());
  }, o);
  return [
    { bench: 'NBD READ reply (OFFSET_DATA) encode+decode', size, mibPerSec: reply.mib, opsPerSec: reply.ops },
    { bench: 'NBD WRITE request encode+decode', size, mibPerSec: write.mib, opsPerSec: write.ops },
  ];
}

/** A fetcher that answers at once, in BLOCK_DATA-sized parts, from a buffer: S and the wire left out. */
function instantFetcher(src: Buffer): Fetcher {
  return {
    request(offset: number, length: number, _cls: number, sink: FetchSink) {
      for (let at = 0; at < length; at += BULK_CHUNK_BYTES) {
        const n = Math.min(BULK_CHUNK_BYTES, length - at);
        sink.onData(offset + at, src.subarray(0, n));
      }
      sink.onDone();
    },
  } as unknown as Fetcher;
}

const STORE_REGION = 64 << 20;

/**
 * D's block store over an in-place image (pages already cached, so the figure is the store, not page
 * allocation): each sample opens a fresh present-bitmap and fills the 64 MiB region once, either as fetched
 * bulk data (fetchBulk: write runs + set bits) or as guest writes (write(); a 4 KiB write to a missing 64 KiB
 * block first fetches the block, served at once). The batched commit (fdatasync) is not in the figure.
 */
async function storeBenches(size: number, o: MicroOptions): Promise<MicroRow[]> {
  const dir = join(o.workDir, 'micro-store');
  mkdirSync(dir, { recursive: true });
  const image = join(dir, 'store.img');
  const fd = openSync(image, 'w');
  const fill = randomish(MiB);
  for (let at = 0; at < STORE_REGION; at += fill.length) writeSync(fd, fill, 0, fill.length, at);
  closeSync(fd);
  const src = randomish(Math.max(size, BULK_CHUNK_BYTES));
  const log = silentLogger();
  const rows: MicroRow[] = [];
  for (const mode of ['bulk', 'guest'] as const) {
    const blockSize = mode === 'bulk' ? Math.min(64 * KiB, size) : 64 * KiB;
    const blockCount = STORE_REGION / blockSize;
    const mib: number[] = [];
    const ops: number[] = [];
    for (let s = 0; s < o.samples + 1; s++) {
      const bmPath = join(dir, `bitmap-${s}`);
      rmSync(bmPath, { force: true });
      const bitmap = PresentBitmap.create(bmPath, blockSize, blockCount);
      // The bench made the file itself before this session: reopen it as found (nothing created, nothing to undo).
      const file = { created: false, identity: pathIdentity(image)!, priorSize: STORE_REGION };
      const store = BlockStore.reopen(image, { size: STORE_REGION, bitmap, fetcher: instantFetcher(src), log, file });
      store.startCopyOnRead();
      const per = size / blockSize;
      const data = src.subarray(0, size);
      const t0 = performance.now();
      if (mode === 'bulk') {
        for (let b = 0; b < blockCount; b += per) store.fetchBulk(b, per);
        // Bulk bytes are written off the event loop: the figure counts them once they have landed.
        await store.writesSettled();
      } else {
        for (let at = 0; at < STORE_REGION; at += size) await store.write(at, data);
      }
      const secs = sec(performance.now() - t0);
      if (store.presentBlocks !== blockCount) throw new Error(`store bench: ${store.presentBlocks}/${blockCount} present`);
      await store.close();
      rmSync(bmPath, { force: true });
      if (s === 0) continue; // warm-up
      mib.push(toMiB(STORE_REGION) / secs);
      ops.push(STORE_REGION / size / secs);
    }
    rows.push({
      bench: mode === 'bulk' ? 'store: fetched data written + bits set' : 'store: guest write (64 KiB blocks)',
      size,
      mibPerSec: spread(mib),
      opsPerSec: spread(ops),
      ...(mode === 'bulk' && blockSize !== 64 * KiB ? { note: `${blockSize / KiB} KiB blocks` } : {}),
      ...(mode === 'guest' && size < 64 * KiB ? { note: 'includes one fetch per 64 KiB block' } : {}),
    });
  }
  rmSync(dir, { recursive: true, force: true });
  return rows;
}

export async function runMicro(o: MicroOptions, log: (line: string) => void): Promise<MicroRow[]> {
  const rows: MicroRow[] = [];
  for (const size of MICRO_SIZES) {
    const got = [...frameBenches(size, o), ...nbdBenches(size, o), ...(await storeBenches(size, o))];
    for (const r of got) log(`  ${r.bench.padEnd(46)} ${fmtSize(r.size).padStart(7)}  ${r.mibPerSec.median.toFixed(0).padStart(6)} MiB/s  (${r.mibPerSec.min.toFixed(0)}–${r.mibPerSec.max.toFixed(0)})`);
    rows.push(...got);
  }
  return rows;
}

export function fmtSize(n: number): string {
  if (n >= GiB) return `${n / GiB} GiB`;
  if (n >= MiB) return `${n / MiB} MiB`;
  return `${n / 1024} KiB`;
}
