import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32, crc32Implementation } from '../../src/common/crc32.js';
import { fcParams } from '../helpers/fc.js';

describe('crc32', () => {
  it('uses @node-rs/crc32 exactly when it loads here and gives the check value, zlib otherwise', async () => {
    let usable = false;
    try {
      const mod = (await import('@node-rs/crc32')) as { crc32: (d: Uint8Array) => number };
      usable = mod.crc32(Buffer.from('123456789')) >>> 0 === 0xcbf43926;
    } catch {
      usable = false;
    }
    expect(crc32Implementation).toBe(usable ? 'simd' : 'zlib');
  });

  // Skipped (and reported as skipped) elsewhere; CI runs on linux x64, where the prebuilt binary must be in use.
  it.runIf(process.platform === 'linux' && process.arch === 'x64')('uses the SIMD implementation on linux x64 (the platform CI runs on)', () => {
    expect(crc32Implementation).toBe('simd');
  });

  it('gives the CRC-32/ISO-HDLC check value and zero for no bytes', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });

  it('equals zlib on any bytes, also when continued from a split point', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), fc.nat(), (bytes, cut) => {
        const buf = Buffer.from(bytes);
        const at = buf.length === 0 ? 0 : cut % (buf.length + 1);
        const whole = zlibCrc32(buf) >>> 0;
        expect(crc32(buf)).toBe(whole);
        expect(crc32(buf.subarray(at), crc32(buf.subarray(0, at)))).toBe(whole);
      }),
      fcParams(100),
    );
  });

  it('sums a view, not the buffer behind it', () => {
    const backing = Buffer.from('xx123456789yy');
    expect(crc32(backing.subarray(2, 11))).toBe(0xcbf43926);
  });
});
