// What the simulated guest has written: 4 KiB unit index -> pattern generation. It travels in the device
// state (so it must stay small: sorted unit deltas and generations as varints, base64) and is saved to a
// file at the end so the final image can be verified unit by unit.
import { closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createPrivateFile } from '../common/state-file.js';
import { ProtocolError } from '../common/errors.js';

export const WRITE_UNIT = 4096;
const FILE_FORMAT = 'postcopy-write-map';
const FILE_VERSION = 1;

export class WriteMap {
  #map = new Map<number, number>();

  get size(): number {
    return this.#map.size;
  }

  get(unit: number): number | undefined {
    return this.#map.get(unit);
  }

  set(unit: number, generation: number): void {
    this.#map.set(unit, generation);
  }

  /** [unit, generation] pairs in ascending unit order. */
  entries(): Array<[number, number]> {
    const units = Float64Array.from(this.#map.keys()).sort();
    const out: Array<[number, number]> = new Array(units.length);
    for (let i = 0; i < units.length; i++) out[i] = [units[i]!, this.#map.get(units[i]!)!];
    return out;
  }

  static from(entries: Iterable<readonly [number, number]>): WriteMap {
    const m = new WriteMap();
    for (const [u, g] of entries) m.set(u, g);
    return m;
  }

  /**
   * Compact text form: for each entry in unit order, varint(unit - previous unit) then varint(generation),
   * base64. Deltas over a spread-out workload are a byte or two, so 60k entries take ~250 KB of JSON.
   */
  encode(): string {
    const entries = this.entries();
    const bytes = Buffer.allocUnsafe(entries.length * 2 * 8);
    let n = 0;
    let prev = 0;
    for (const [u, g] of entries) {
      n = putVarint(bytes, n, u - prev);
      n = putVarint(bytes, n, g);
      prev = u;
    }
    return bytes.subarray(0, n).toString('base64');
  }

  static decode(text: string): WriteMap {
    if (typeof text !== 'string') throw new ProtocolError('PC_ERR_MALFORMED', 'write map is not a string');
    const bytes = Buffer.from(text, 'base64');
    const m = new WriteMap();
    let pos = 0;
    let unit = 0;
    let first = true;
    while (pos < bytes.length) {
      const [delta, p1] = getVarint(bytes, pos);
      const [gen, p2] = getVarint(bytes, p1);
      pos = p2;
      // Strictly ascending units (delta 0 only for the very first entry) guard against corrupt input.
      if (!first && delta === 0) throw new ProtocolError('PC_ERR_MALFORMED', 'write map units not ascending');
      unit += delta;
      first = false;
      m.set(unit, gen);
    }
    return m;
  }
}

function putVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function getVarint(buf: Buffer, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (pos >= buf.length) throw new ProtocolError('PC_ERR_MALFORMED', 'write map truncated');
    const b = buf[pos++]!;
    v += (b & 127) * mul;
    if (b < 128) return [v, pos];
    mul *= 128;
    if (mul > 2 ** 49) throw new ProtocolError('PC_ERR_MALFORMED', 'write map varint too long');
  }
}

/** Save a write map as a small self-describing JSON file (for the final verification). */
export function saveWriteMap(path: string, map: WriteMap, unitSize = WRITE_UNIT): void {
  const doc = { format: FILE_FORMAT, version: FILE_VERSION, unitSize, count: map.size, entries: map.encode() };
  // 0600: it describes the guest's disk writes (image data); a symlink at path is replaced, never written through.
  const fd = createPrivateFile(path);
  try {
    writeFileSync(fd, JSON.stringify(doc) + '\n');
  } finally {
    closeSync(fd);
  }
}

export function loadWriteMap(path: string): { map: WriteMap; unitSize: number } {
  let doc: { format?: unknown; version?: unknown; unitSize?: unknown; count?: unknown; entries?: unknown };
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ProtocolError('PC_ERR_MALFORMED', `write map file ${path} is not JSON`, { cause: err });
  }
  if (doc.format !== FILE_FORMAT || doc.version !== FILE_VERSION || typeof doc.entries !== 'string') {
    throw new ProtocolError('PC_ERR_MALFORMED', `${path} is not a version ${FILE_VERSION} write map`);
  }
  const map = WriteMap.decode(doc.entries);
  if (doc.count !== map.size) throw new ProtocolError('PC_ERR_MALFORMED', `${path}: count ${doc.count} but ${map.size} entries`);
  const unitSize = typeof doc.unitSize === 'number' ? doc.unitSize : WRITE_UNIT;
  return { map, unitSize };
}
