// The parser of `qemu-img map --output=json`: a real map is taken whole at any chunk boundary; anything that is not
// a contiguous, in-range cover of the image is refused (the caller then reads the image instead).
import { describe, expect, it } from 'vitest';
import { BackendError } from '../../src/common/errors.js';
import { MAP_MAX_OBJECT_CHARS } from '../../src/image/constants.js';
import { QemuMapParser, type MapExtent } from '../../src/image/qemu-map-parser.js';

/** Output of qemu-img 7.2 for a 64 MiB file with 4 KiB written at 5 MiB and 128 KiB at 300 × 64 KiB. */
const REAL = `[{ "start": 0, "length": 5242880, "depth": 0, "present": true, "zero": true, "data": false, "offset": 0},
{ "start": 5242880, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true, "offset": 5242880},
{ "start": 5246976, "length": 14413824, "depth": 0, "present": true, "zero": true, "data": false, "offset": 5246976},
{ "start": 19660800, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true, "offset": 19660800},
{ "start": 19791872, "length": 47316992, "depth": 0, "present": true, "zero": true, "data": false, "offset": 19791872}]
`;
const REAL_SIZE = 64 * 1024 * 1024;
const REAL_EXTENTS: MapExtent[] = [
  { offset: 0, length: 5242880, zero: true },
  { offset: 5242880, length: 4096, zero: false },
  { offset: 5246976, length: 14413824, zero: true },
  { offset: 19660800, length: 131072, zero: false },
  { offset: 19791872, length: 47316992, zero: true },
];

function parse(size: number, ...chunks: string[]): MapExtent[] {
  const out: MapExtent[] = [];
  const p = new QemuMapParser(size, (e) => out.push(e));
  for (const c of chunks) p.push(c);
  p.end();
  return out;
}

function refused(size: number, text: string, why: RegExp): void {
  let err: unknown;
  try {
    parse(size, text);
  } catch (e) {
    err = e;
  }
  expect(err, `accepted: ${text.slice(0, 120)}`).toBeInstanceOf(BackendError);
  expect((err as BackendError).code).toBe('PC_ERR_BACKEND');
  expect((err as Error).message).toMatch(why);
}

const ext = (start: number, length: number, zero = true, more = '') => `{"start": ${start}, "length": ${length}, "zero": ${zero}, "data": ${!zero}${more}}`;

describe('qemu-img map parser', () => {
  it('takes a real map whole, at every split point', () => {
    for (let cut = 0; cut <= REAL.length; cut++) expect(parse(REAL_SIZE, REAL.slice(0, cut), REAL.slice(cut))).toEqual(REAL_EXTENTS);
    // One character at a time.
    expect(parse(REAL_SIZE, ...REAL.split(''))).toEqual(REAL_EXTENTS);
  });

  it('ignores fields it does not know (newer qemu adds some), braces inside strings included', () => {
    const text = `[${ext(0, 4096, false, ', "compressed": false, "filename": "a}b{\\"c"')},${ext(4096, 4096, true, ', "present": false')}]`;
    expect(parse(8192, text)).toEqual([
      { offset: 0, length: 4096, zero: false },
      { offset: 4096, length: 4096, zero: true },
    ]);
  });

  it('an extent that is zero and data at once counts as zero (it reads as zeroes)', () => {
    expect(parse(4096, `[{"start":0,"length":4096,"zero":true,"data":true}]`)).toEqual([{ offset: 0, length: 4096, zero: true }]);
  });

  it('refuses overlapping extents, gaps and extents past the image', () => {
    refused(8192, `[${ext(0, 4096)},${ext(2048, 6144)}]`, /overlaps/);
    refused(8192, `[${ext(0, 4096)},${ext(0, 8192)}]`, /overlaps/);
    refused(8192, `[${ext(0, 4096)},${ext(6144, 2048)}]`, /gap/);
    refused(8192, `[${ext(4096, 4096)}]`, /gap/);
    refused(8192, `[${ext(0, 4096)},${ext(4096, 8192)}]`, /past the image/);
    refused(8192, `[${ext(0, 2 ** 60)}]`, /bad length|past the image/);
  });

  it('refuses a short map: too few bytes covered, a cut array, a cut object, no output', () => {
    refused(8192, `[${ext(0, 4096)}]`, /covers 4096 of 8192/);
    refused(8192, `[${ext(0, 4096)},`, /ends early/);
    refused(8192, `[${ext(0, 4096)}`, /ends early/);
    refused(8192, `[{"start": 0, "len`, /ends early/);
    refused(8192, '', /ends early \(no output\)/);
    refused(8192, '[]', /covers 0 of 8192/);
  });

  it('refuses malformed output', () => {
    refused(4096, `{"start":0}`, /expected '\['/);
    refused(4096, `qemu-img: something went wrong`, /expected '\['/);
    refused(4096, `[${ext(0, 4096)}] trailing`, /after the end/);
    refused(4096, `[${ext(0, 4096)}][]`, /after the end/);
    refused(4096, `[${ext(0, 4096)} ${ext(4096, 0)}]`, /expected ','/);
    refused(4096, `[[0, 4096]]`, /expected an extent object/);
    refused(4096, `[,${ext(0, 4096)}]`, /expected an extent object/);
    refused(4096, `[${ext(0, 4096)},]`, /expected an extent object/);
    refused(4096, `[{"start": 0, "length": 4096, "zero": true, "data": false,}]`, /not JSON/);
    refused(4096, `[{"start": 0, "length": 4096, "zero": true]`, /not JSON/);
  });

  it('refuses extents with missing or ill-typed fields', () => {
    refused(4096, `[{"length": 4096, "zero": true, "data": false}]`, /bad start/);
    refused(4096, `[{"start": "0", "length": 4096, "zero": true, "data": false}]`, /bad start/);
    refused(4096, `[{"start": -4096, "length": 8192, "zero": true, "data": false}]`, /bad start/);
    refused(4096, `[{"start": 0.5, "length": 4096, "zero": true, "data": false}]`, /bad start/);
    refused(4096, `[{"start": 0, "length": 0, "zero": true, "data": false}]`, /bad length/);
    refused(4096, `[{"start": 0, "length": 1e400, "zero": true, "data": false}]`, /bad length/);
    refused(4096, `[{"start": 0, "length": 4096, "zero": "true", "data": false}]`, /booleans/);
    refused(4096, `[{"start": 0, "length": 4096, "zero": true}]`, /booleans/);
    refused(4096, `[{"start": 0, "length": 4096, "zero": true, "data": false, "present": 1}]`, /present/);
  });

  it('refuses an object longer than the cap before buffering past it, wherever the chunks split it', () => {
    const long = `[{"start": 0, "length": 4096, "zero": true, "data": false, "pad": "${'x'.repeat(MAP_MAX_OBJECT_CHARS)}"}]`;
    refused(4096, long, /longer than/);
    const p = new QemuMapParser(4096, () => {});
    expect(() => {
      for (let at = 0; at < long.length; at += 100) p.push(long.slice(at, at + 100));
    }).toThrow(/longer than/);
  });

  it('random bytes only ever raise the map error', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const alphabet = '[]{}",:0123456789 \ntruefalsestartlengthzerodata-.e\\';
    for (let i = 0; i < 2000; i++) {
      let text = '';
      const n = Math.floor(rnd() * 200);
      for (let j = 0; j < n; j++) text += alphabet[Math.floor(rnd() * alphabet.length)];
      try {
        parse(4096, text);
      } catch (e) {
        expect(e).toBeInstanceOf(BackendError);
      }
    }
  });
});
