// The write map's compact form: exact round trip, and small enough to ride in the device state.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/common/errors.js';
import { Prng } from '../../src/guest/prng.js';
import { WriteMap, loadWriteMap, saveWriteMap } from '../../src/guest/write-map.js';
import { fcAssert } from './helpers/fc-params.js';

const dir = mkdtempSync(join(tmpdir(), 'pc-wmap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('WriteMap', () => {
  it('round-trips through encode/decode in unit order', () => {
    fcAssert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 36 }), fc.integer({ min: 1, max: 0xffff })), { maxLength: 300 }), (pairs) => {
        const m = WriteMap.from(pairs);
        const expected = [...new Map(pairs)].sort((a, b) => a[0] - b[0]);
        expect(WriteMap.decode(m.encode()).entries()).toEqual(expected);
      }),
    );
  });

  it('packs 60k entries of a 1 GiB disk well under 1 MiB', () => {
    const p = new Prng(7);
    const m = new WriteMap();
    while (m.size < 60_000) m.set(p.nextInt(262_144), 1 + p.nextInt(5));
    const text = m.encode();
    expect(text.length).toBeLessThan(400_000);
    // String compare: toEqual on 60k pairs costs more than the whole encode.
    expect(JSON.stringify(WriteMap.decode(text).entries())).toBe(JSON.stringify(m.entries()));
  });

  it('saves to and loads from a file', () => {
    const m = WriteMap.from([
      [5, 2],
      [1, 1],
      [1000, 65535],
    ]);
    const path = join(dir, 'wm.json');
    saveWriteMap(path, m);
    const { map, unitSize } = loadWriteMap(path);
    expect(unitSize).toBe(4096);
    expect(map.entries()).toEqual([
      [1, 1],
      [5, 2],
      [1000, 65535],
    ]);
  });

  it('rejects corrupt input with PC_ERR_MALFORMED', () => {
    expect(() => WriteMap.decode(Buffer.from([0x81]).toString('base64'))).toThrow(ProtocolError);
    expect(() => WriteMap.decode(Buffer.from([1, 1, 0, 1]).toString('base64'))).toThrow(/ascending/);
    const path = join(dir, 'bad.json');
    writeFileSync(path, '{"format":"something-else"}');
    try {
      loadWriteMap(path);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).code).toBe('PC_ERR_MALFORMED');
    }
  });
});
