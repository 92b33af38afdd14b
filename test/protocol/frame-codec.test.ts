// FrameDecoder / encodeFrame / encodeHeader against independent golden vectors, at every split point,
// under random chunking, and against malformed headers (each error asserted by class and code).
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/common/errors.js';
import {
  FRAME_HEADER_SIZE,
  FRAME_MAGIC,
  MAX_CONTROL_PAYLOAD,
  MAX_FRAME_PAYLOAD,
  MSG,
  isKnownMsg,
  nameOfMsg,
} from '../../src/protocol/constants.js';
import { ByteParts } from '../../src/protocol/byte-parts.js';
import { FrameDecoder, encodeFrame, encodeHeader, readFrameHeader, type Frame } from '../../src/protocol/frame-codec.js';
import { expectError, expectThrows } from '../helpers/errors.js';
import { fcParams, fcRuns } from '../helpers/fc.js';
import { F_URGENT, GOLDEN, HEADER_BYTES, T, buildFrame, buildHeader, hex } from '../helpers/frame-builder.js';
import { byteByByte, cutAt, framesOf, showFrame } from '../helpers/wire.js';

/** What the decoder must yield for a vector, read straight from the vector's bytes. */
function expectedFrame(bytes: Buffer): Frame {
  return { type: bytes[4]!, flags: bytes[5]!, id: bytes.readUInt32BE(8), payload: ByteParts.of(bytes.subarray(HEADER_BYTES)) };
}

/** A copy in memory of its own (small Buffer.from copies share Node's pool, where every copy has the same .buffer). */
function ownCopy(b: Buffer): Buffer {
  const out = Buffer.alloc(b.length);
  b.copy(out);
  return out;
}

/** Frames in a shape that compares fast (payload as hex). */
function show(frames: readonly Frame[]): ReturnType<typeof showFrame>[] {
  return frames.map(showFrame);
}

describe('wire layout', () => {
  it('node:zlib crc32 is the standard CRC-32 (check value of "123456789")', () => {
    expect(crc32('123456789')).toBe(0xcbf43926);
  });

  it('the header is 20 bytes and starts with "PCY1"', () => {
    expect(FRAME_HEADER_SIZE).toBe(HEADER_BYTES);
    const m = Buffer.alloc(4);
    m.writeUInt32BE(FRAME_MAGIC, 0);
    expect(m.toString('latin1')).toBe('PCY1');
  });

  it('the test table of type numbers matches constants.ts', () => {
    expect({ ...MSG }).toEqual({ ...T });
    for (const [name, v] of Object.entries(T)) expect(nameOfMsg(v)).toBe(name);
  });

  it.each(GOLDEN.map((v) => [v.name, v] as const))('%s: the annotated hex and the builder agree', (_n, v) => {
    expect(v.built.toString('hex')).toBe(v.bytes.toString('hex'));
  });
});

describe.each(GOLDEN.map((v) => [v.name, v] as const))('golden frame %s', (_n, v) => {
  const want = expectedFrame(v.bytes);
  const wantShown = show([want]);

  it('decodes', () => {
    const d = new FrameDecoder();
    expect(show(d.push(v.bytes))).toEqual(wantShown);
    expect(d.buffered).toBe(0);
  });

  it('generates', () => {
    const [header, payload] = encodeFrame(want.type, want.id, Buffer.from(want.payload.toBuffer()), want.flags);
    expect(Buffer.concat([header!, payload!]).toString('hex')).toBe(v.bytes.toString('hex'));
    // encodeHeader over the payload in two parts gives the same header (crc chained across parts).
    const wantBytes = want.payload.toBuffer();
    const mid = wantBytes.length >> 1;
    const parts = [wantBytes.subarray(0, mid), wantBytes.subarray(mid)];
    expect(encodeHeader(want.type, want.id, parts, want.flags).toString('hex')).toBe(v.bytes.subarray(0, HEADER_BYTES).toString('hex'));
  });

  it('round-trips', () => {
    const [header, payload] = encodeFrame(want.type, want.id, want.payload.toBuffer(), want.flags);
    expect(show(new FrameDecoder().push(Buffer.concat([header!, payload!])))).toEqual(wantShown);
  });

  it('decodes at every split point', () => {
    for (let i = 0; i <= v.bytes.length; i++) {
      const d = new FrameDecoder();
      const first = d.push(v.bytes.subarray(0, i));
      const second = d.push(v.bytes.subarray(i));
      expect(show([...first, ...second]), `split at ${i}`).toEqual(wantShown);
      expect(i === v.bytes.length ? first : second).toHaveLength(1);
      expect(d.buffered).toBe(0);
    }
  });

  it('decodes byte by byte, never holding more than one frame', () => {
    const d = new FrameDecoder();
    const out: Frame[] = [];
    for (const b of byteByByte(v.bytes)) {
      out.push(...d.push(b));
      expect(d.buffered).toBeLessThanOrEqual(Math.max(v.bytes.length - HEADER_BYTES, HEADER_BYTES));
    }
    expect(show(out)).toEqual(wantShown);
  });
});

describe('FrameDecoder streaming', () => {
  const all = Buffer.concat(GOLDEN.map((v) => v.bytes));
  const wantAll = show(GOLDEN.map((v) => expectedFrame(v.bytes)));

  it('empty chunks are harmless', () => {
    const d = new FrameDecoder();
    expect(d.push(Buffer.alloc(0))).toEqual([]);
    expect(show(d.push(all))).toEqual(wantAll);
    expect(d.push(Buffer.alloc(0))).toEqual([]);
  });

  it('every vector concatenated, split at random points, decodes to the same sequence', () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: all.length }), { maxLength: 40 }), (points) => {
        expect(show(framesOf(cutAt(all, points)))).toEqual(wantAll);
      }),
      fcParams(),
    );
  });

  it('random frames concatenated and cut anywhere decode to the same frames', () => {
    const frameArb = fc.record({
      type: fc.constantFrom(...Object.values(T)),
      flags: fc.nat({ max: 255 }),
      id: fc.nat({ max: 0xffffffff }),
      payload: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    });
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 10 }), fc.array(fc.nat({ max: 3000 }), { maxLength: 30 }), (frames, points) => {
        const bytes = Buffer.concat(frames.map((f) => buildFrame(f)));
        const d = new FrameDecoder();
        expect(show(framesOf(cutAt(bytes, points), d))).toEqual(show(frames));
        expect(d.buffered).toBe(0);
      }),
      fcParams(),
    );
  });

  it('a payload inside one chunk is a zero-copy view of it', () => {
    const bytes = GOLDEN[0]!.bytes;
    const [f] = new FrameDecoder().push(bytes);
    expect(f!.payload.parts).toHaveLength(1);
    expect(f!.payload.parts[0]!.buffer).toBe(bytes.buffer);
  });

  it('a payload spread over chunks comes as views of them, never assembled', () => {
    const payload = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff));
    const bytes = buildFrame({ type: T.BLOCK_DATA, id: 3, payload });
    const chunks = cutAt(bytes, [10, 21, 22, 999, 4000]).map(ownCopy);
    const frames = framesOf(chunks);
    expect(frames).toHaveLength(1);
    const got = frames[0]!.payload;
    expect(got.equals(payload)).toBe(true);
    expect(got.crc32()).toBe(crc32(payload) >>> 0);
    // The header ends inside the second chunk: the payload is the rest of it and the four chunks after, as views.
    expect(HEADER_BYTES).toBeGreaterThan(10);
    expect(HEADER_BYTES).toBeLessThan(21);
    expect(got.parts.map((p) => p.buffer)).toEqual(chunks.slice(1).map((c) => c.buffer));
  });

  it('a BLOCK_DATA frame cut once at every byte, and in three at every pair of points: the same frame, its payload in views', () => {
    const payload = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff));
    const bytes = buildFrame({ type: T.BLOCK_DATA, id: 5, payload });
    const want = show([expectedFrame(bytes)]);
    for (let i = 0; i <= bytes.length; i++) {
      const chunks = [ownCopy(bytes.subarray(0, i)), ownCopy(bytes.subarray(i))];
      const d = new FrameDecoder();
      const frames = framesOf(chunks, d);
      expect(show(frames), `cut at ${i}`).toEqual(want);
      expect(d.buffered).toBe(0);
      // Every part is a view of a chunk pushed (no part is a fresh copy).
      for (const p of frames[0]!.payload.parts) expect(chunks.some((c) => c.buffer === p.buffer), `cut at ${i}`).toBe(true);
    }
    for (let i = 0; i <= bytes.length; i += 7) {
      for (let j = i; j <= bytes.length; j += 5) {
        expect(show(framesOf(cutAt(bytes, [i, j]))), `cut at ${i}, ${j}`).toEqual(want);
      }
    }
  });

  it('a payload with a bad checksum is refused however it is split (the crc runs over the parts)', () => {
    const bytes = buildFrame({ type: T.BLOCK_DATA, id: 5, payload: Buffer.alloc(100, 1) });
    bytes[bytes.length - 1] ^= 1;
    for (let i = HEADER_BYTES; i <= bytes.length; i++) {
      expectThrows(() => framesOf([bytes.subarray(0, i), bytes.subarray(i)]), ProtocolError, 'PC_ERR_CHECKSUM');
    }
  });

  it('a big frame trickling in one byte per chunk costs linear time (a hostile peer cannot stall the event loop)', () => {
    // 128 KiB in 1-byte chunks: ~0.1 s when linear; the old shift-per-chunk reassembly took ~2 s here
    // (and minutes for a 1 MiB HELLO sent before authentication).
    const payload = Buffer.alloc(128 * 1024, 0x20);
    const bytes = buildFrame({ type: T.BLOCK_DATA, payload });
    const d = new FrameDecoder();
    const frames: Frame[] = [];
    const t0 = performance.now();
    for (let i = 0; i < bytes.length; i++) frames.push(...d.push(bytes.subarray(i, i + 1)));
    const ms = performance.now() - t0;
    expect(frames).toHaveLength(1);
    expect(frames[0]!.payload.equals(payload)).toBe(true);
    expect(ms).toBeLessThan(1000);
  });

  it('holds a partial frame and reports its size in buffered', () => {
    const bytes = GOLDEN[3]!.bytes;
    const d = new FrameDecoder();
    expect(d.push(bytes.subarray(0, 10))).toEqual([]);
    expect(d.buffered).toBe(10);
    expect(d.push(bytes.subarray(10, 25))).toEqual([]);
    expect(d.buffered).toBe(5); // header consumed, 5 payload bytes held
    expect(d.push(bytes.subarray(25))).toHaveLength(1);
    expect(d.buffered).toBe(0);
  });
});

describe('FrameDecoder zero-copy across chunk boundaries', () => {
  // A consumed chunk must leave nothing behind: a leftover empty chunk would make the next payload a copy.
  const payload = Buffer.from('0123456789abcdef', 'latin1');
  const frame = buildFrame({ type: T.GUEST_STREAM, payload });
  /** A copy in memory of its own: small Buffer.from copies share Node's pool, where any copy has the same .buffer. */
  const own = (b: Buffer) => {
    const out = Buffer.alloc(b.length);
    b.copy(out);
    return out;
  };
  /** `view` is `chunk` itself, not a copy of it. */
  const expectView = (parts: ByteParts, chunk: Buffer) => {
    expect(parts.parts).toHaveLength(1);
    const view = parts.parts[0]!;
    expect(view.buffer).toBe(chunk.buffer);
    expect(view.byteOffset).toBe(chunk.byteOffset);
  };

  it('header in one chunk, payload in the next: the payload is a view of its chunk', () => {
    const d = new FrameDecoder();
    expect(d.push(frame.subarray(0, HEADER_BYTES))).toEqual([]);
    const chunk = own(frame.subarray(HEADER_BYTES));
    const [f] = d.push(chunk);
    expectView(f!.payload, chunk);
    expect(f!.payload.equals(payload)).toBe(true);
  });

  it('a header assembled from two chunks that end exactly with it: the payload in the next chunk is still a view', () => {
    const d = new FrameDecoder();
    expect(d.push(own(frame.subarray(0, 7)))).toEqual([]);
    expect(d.push(own(frame.subarray(7, HEADER_BYTES)))).toEqual([]);
    expect(d.buffered).toBe(0);
    const chunk = own(frame.subarray(HEADER_BYTES));
    const [f] = d.push(chunk);
    expectView(f!.payload, chunk);
  });

  it('an empty chunk between header and payload changes nothing', () => {
    const d = new FrameDecoder();
    d.push(frame.subarray(0, HEADER_BYTES));
    expect(d.push(Buffer.alloc(0))).toEqual([]);
    const chunk = own(frame.subarray(HEADER_BYTES));
    const [f] = d.push(chunk);
    expectView(f!.payload, chunk);
  });
});

describe('FrameDecoder.setPayloadLimit (the cap before authentication)', () => {
  const pre = 'before authentication';

  it('lowers every type\'s cap from the next header on, naming the reason when it is what refused', () => {
    const d = new FrameDecoder();
    d.setPayloadLimit(9, pre);
    // At the limit: accepted.
    expect(d.push(buildFrame({ type: T.PING, payload: Buffer.from('{"seq":7}') }))).toHaveLength(1);
    const err = expectThrows(() => d.push(buildHeader({ type: T.HELLO, length: 10 })), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message.endsWith('HELLO declares 10 bytes, cap 9 before authentication')).toBe(true);
  });

  it('without a reason, the refusal says just the numbers', () => {
    const d = new FrameDecoder();
    d.setPayloadLimit(4);
    const err = expectThrows(() => d.push(buildHeader({ type: T.BLOCK_DATA, length: 5 })), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message.endsWith('BLOCK_DATA declares 5 bytes, cap 4')).toBe(true);
  });

  it('a limit above a type\'s own cap leaves that cap, and the reason out of its refusal', () => {
    const d = new FrameDecoder();
    d.setPayloadLimit(MAX_CONTROL_PAYLOAD, pre);
    const err = expectThrows(() => d.push(buildHeader({ type: T.BEGIN, length: MAX_CONTROL_PAYLOAD + 1 })), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message.endsWith(`BEGIN declares ${MAX_CONTROL_PAYLOAD + 1} bytes, cap ${MAX_CONTROL_PAYLOAD}`)).toBe(true);
  });

  it('raised back with Infinity: the per-type caps again, no reason given', () => {
    const d = new FrameDecoder();
    d.setPayloadLimit(16, pre);
    d.setPayloadLimit(Infinity);
    expect(d.push(buildFrame({ type: T.BLOCK_DATA, payload: Buffer.alloc(100) }))).toHaveLength(1);
    const err = expectThrows(() => d.push(buildHeader({ type: T.BLOCK_DATA, length: MAX_FRAME_PAYLOAD + 1 })), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message.endsWith(`BLOCK_DATA declares ${MAX_FRAME_PAYLOAD + 1} bytes, cap ${MAX_FRAME_PAYLOAD}`)).toBe(true);
  });
});

describe('refusals say what was wrong', () => {
  it('encodeHeader: the type, the size and the cap', () => {
    const err = expectThrows(() => encodeHeader(MSG.HELLO, 0, [Buffer.alloc(MAX_CONTROL_PAYLOAD + 1)]), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message.endsWith(`HELLO of ${MAX_CONTROL_PAYLOAD + 1} bytes, cap ${MAX_CONTROL_PAYLOAD}`)).toBe(true);
  });

  it('the decoder: the magic seen (8 hex digits), reserved bits, the frame whose checksum failed, use after an error', () => {
    const magic = expectThrows(() => new FrameDecoder().push(buildFrame({ type: T.PING, magic: 0x00435931 })), ProtocolError, 'PC_ERR_BAD_MAGIC');
    expect(magic.message.endsWith('0x00435931')).toBe(true);
    const reserved = expectThrows(() => new FrameDecoder().push(buildFrame({ type: T.PING, reserved: 1 })), ProtocolError, 'PC_ERR_MALFORMED');
    expect(reserved.message.endsWith('reserved header bits set')).toBe(true);
    const d = new FrameDecoder();
    const crc = expectThrows(() => d.push(buildFrame({ type: T.BLOCK_REQ, id: 42, payload: Buffer.alloc(13), crc: 1 })), ProtocolError, 'PC_ERR_CHECKSUM');
    expect(crc.message.endsWith('BLOCK_REQ id 42')).toBe(true);
    const dead = expectThrows(() => d.push(Buffer.alloc(0)), ProtocolError, 'PC_ERR_MALFORMED');
    expect(dead.message.endsWith('decoder used after a protocol error')).toBe(true);
  });
});

describe('encodeHeader limits', () => {
  it('refuses a payload over MAX_FRAME_PAYLOAD (ProtocolError PC_ERR_FRAME_TOO_LARGE)', () => {
    const big = Buffer.alloc(MAX_FRAME_PAYLOAD + 1);
    expectThrows(() => encodeHeader(MSG.BLOCK_DATA, 1, [big]), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expectThrows(() => encodeHeader(MSG.BLOCK_DATA, 1, [big.subarray(0, 8), big.subarray(8)]), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(encodeHeader(MSG.BLOCK_DATA, 1, [big.subarray(1)]).readUInt32BE(12)).toBe(MAX_FRAME_PAYLOAD);
  });

  it('refuses a control payload over MAX_CONTROL_PAYLOAD, which every decoder would reject', () => {
    const big = Buffer.alloc(MAX_CONTROL_PAYLOAD + 1, 0x20);
    expectThrows(() => encodeHeader(MSG.BEGIN, 0, [big]), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(encodeHeader(MSG.BEGIN, 0, [big.subarray(1)]).readUInt32BE(12)).toBe(MAX_CONTROL_PAYLOAD);
  });
});

describe('FrameDecoder errors', () => {
  const good = GOLDEN[3]!.bytes; // BLOCK_REQ

  function pushAll(bytes: Buffer, d = new FrameDecoder()): () => Frame[] {
    return () => d.push(bytes);
  }

  it('bad magic: PC_ERR_BAD_MAGIC', () => {
    const bad = Buffer.from(good);
    bad[0] = 0x51;
    expectThrows(pushAll(bad), ProtocolError, 'PC_ERR_BAD_MAGIC');
    expectThrows(pushAll(buildFrame({ type: T.PING, magic: Buffer.from('HTTP') })), ProtocolError, 'PC_ERR_BAD_MAGIC');
    // An HTTP request or a TLS ClientHello aimed at the port is caught on its first header.
    expectThrows(pushAll(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), ProtocolError, 'PC_ERR_BAD_MAGIC');
    expectThrows(pushAll(hex`16030100c4010000c00303 ${'00'.repeat(40)}`), ProtocolError, 'PC_ERR_BAD_MAGIC');
  });

  it('bad magic after a good frame: the stream is out of sync', () => {
    const d = new FrameDecoder();
    expect(d.push(good)).toHaveLength(1);
    expectThrows(() => d.push(Buffer.concat([good.subarray(1), good.subarray(0, 1)])), ProtocolError, 'PC_ERR_BAD_MAGIC');
  });

  it('every unknown type byte: PC_ERR_UNKNOWN_TYPE', () => {
    let unknown = 0;
    for (let type = 0; type <= 255; type++) {
      if (isKnownMsg(type)) continue;
      unknown++;
      expectThrows(pushAll(buildFrame({ type, payload: Buffer.from('{}') })), ProtocolError, 'PC_ERR_UNKNOWN_TYPE');
    }
    expect(unknown).toBe(256 - Object.keys(T).length);
  });

  it('each reserved header bit set: PC_ERR_MALFORMED', () => {
    for (let bit = 0; bit < 16; bit++) {
      expectThrows(pushAll(buildFrame({ type: T.PING, payload: Buffer.from('{"seq":1}'), reserved: 1 << bit })), ProtocolError, 'PC_ERR_MALFORMED');
    }
  });

  it('checksum mismatch: PC_ERR_CHECKSUM (wrong crc field, or a payload bit flipped)', () => {
    const wrongCrc = Buffer.from(good);
    wrongCrc.writeUInt32BE((wrongCrc.readUInt32BE(16) ^ 1) >>> 0, 16);
    expectThrows(pushAll(wrongCrc), ProtocolError, 'PC_ERR_CHECKSUM');
    for (let i = HEADER_BYTES; i < good.length; i++) {
      const flipped = Buffer.from(good);
      flipped[i]! ^= 0x80;
      expectThrows(pushAll(flipped), ProtocolError, 'PC_ERR_CHECKSUM');
    }
    // An empty payload has crc 0; anything else is a mismatch.
    expectThrows(pushAll(buildFrame({ type: T.CONFIRM, crc: 1 })), ProtocolError, 'PC_ERR_CHECKSUM');
    expect(new FrameDecoder().push(buildFrame({ type: T.CONFIRM }))).toHaveLength(1);
  });

  describe('declared length over the cap: PC_ERR_FRAME_TOO_LARGE as soon as the header is in, nothing buffered', () => {
    const cases = [
      { name: 'data frame', type: T.BLOCK_DATA, cap: MAX_FRAME_PAYLOAD },
      { name: 'control frame', type: T.BEGIN, cap: MAX_CONTROL_PAYLOAD },
      { name: 'data frame, length 2^32-1', type: T.EXTENTS, cap: 0xfffffffe },
    ];
    it.each(cases)('$name', ({ type, cap }) => {
      const header = buildHeader({ type, length: cap + 1 });
      const d = new FrameDecoder();
      expect(d.push(header.subarray(0, HEADER_BYTES - 1))).toEqual([]);
      expect(d.buffered).toBe(HEADER_BYTES - 1);
      // The last header byte completes it: refused now, with no payload byte sent or held.
      const err = expectThrows(() => d.push(header.subarray(HEADER_BYTES - 1)), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
      expect(err.message).toContain(String(cap + 1));
      expect(d.buffered).toBe(0);
    });

    it('a header plus payload bytes in the same chunk is refused without keeping them', () => {
      const d = new FrameDecoder();
      const chunk = Buffer.concat([buildHeader({ type: T.BLOCK_DATA, length: MAX_FRAME_PAYLOAD + 1 }), Buffer.alloc(64 * 1024)]);
      expectThrows(() => d.push(chunk), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
      expect(d.buffered).toBe(0);
    });

    it('exactly at the cap is accepted, and only what has arrived is held', () => {
      for (const { type, cap } of cases.slice(0, 2)) {
        const d = new FrameDecoder();
        expect(d.push(buildHeader({ type, length: cap }))).toEqual([]);
        expect(d.buffered).toBe(0);
        expect(d.push(Buffer.alloc(1000))).toEqual([]);
        expect(d.buffered).toBe(1000);
      }
    });

    it('a control type may not use the larger data cap', () => {
      expectThrows(
        () => new FrameDecoder().push(buildHeader({ type: T.HELLO, length: MAX_CONTROL_PAYLOAD + 1 })),
        ProtocolError,
        'PC_ERR_FRAME_TOO_LARGE',
      );
    });
  });

  it('a decoder that raised is dead: later pushes raise, and it holds nothing', () => {
    const d = new FrameDecoder();
    expectThrows(() => d.push(Buffer.alloc(HEADER_BYTES)), ProtocolError, 'PC_ERR_BAD_MAGIC');
    expect(d.buffered).toBe(0);
    expectThrows(() => d.push(good), ProtocolError, 'PC_ERR_MALFORMED');
    expectThrows(() => d.push(Buffer.alloc(0)), ProtocolError, 'PC_ERR_MALFORMED');
  });

  it('random bytes in random chunks: refused with the code a reference parser gives, or decoded to exactly its frames', () => {
    const magic = Buffer.from('PCY1');
    const seen = { refused: 0, frames: 0 };
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.uint8Array({ maxLength: 400, size: 'max' }),
        fc.array(fc.nat({ max: 420 }), { maxLength: 8 }),
        (withMagic, raw, points) => {
          const bytes = withMagic ? Buffer.concat([magic, Buffer.from(raw)]) : Buffer.from(raw);
          const out = decodeLikeReference(bytes, points);
          if (out.refused) seen.refused++;
          seen.frames += out.frames;
        },
      ),
      fcParams(),
    );
    // Refusals were reached (a run of a handful of cases may miss them).
    if (fcRuns() >= 50) expect(seen.refused).toBeGreaterThan(0);
  });

  it('random mutations of valid frames: refused with the code a reference parser gives, or decoded to exactly its frames', () => {
    const all = Buffer.concat(GOLDEN.map((v) => v.bytes));
    const seen = { refused: 0, frames: 0 };
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: all.length - 1 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat({ max: all.length }), { maxLength: 6 }),
        (edits, points) => {
          const bytes = Buffer.from(all);
          for (const [at, v] of edits) bytes[at] = v;
          const out = decodeLikeReference(bytes, points);
          if (out.refused) seen.refused++;
          seen.frames += out.frames;
        },
      ),
      fcParams(),
    );
    // Both outcomes were reached: the property is not vacuous either way (a run of a handful of cases may miss one).
    if (fcRuns() >= 50) expect([seen.refused > 0, seen.frames > 0]).toEqual([true, true]);
  });

  it('a payload corrupted in a burst of up to 32 bits never decodes: PC_ERR_CHECKSUM, in any chunking', () => {
    // CRC-32 detects every error burst of 32 bits or fewer, so this holds for every input, not just most.
    const withPayload = GOLDEN.filter((v) => v.bytes.length > HEADER_BYTES);
    fc.assert(
      fc.property(
        fc.constantFrom(...withPayload),
        fc.nat(),
        fc.uint8Array({ minLength: 1, maxLength: 4 }),
        fc.array(fc.nat({ max: 5000 }), { maxLength: 6 }),
        (v, where, xor, points) => {
          const bytes = Buffer.from(v.bytes);
          const span = bytes.length - HEADER_BYTES;
          const at = HEADER_BYTES + (where % span);
          xor[0] ||= 1; // at least one bit changes
          for (let i = 0; i < xor.length && at + i < bytes.length; i++) bytes[at + i]! ^= xor[i]!;
          expectThrows(() => framesOf(cutAt(bytes, points)), ProtocolError, 'PC_ERR_CHECKSUM');
        },
      ),
      fcParams(),
    );
  });

  it('an urgent flag in the header is passed through untouched', () => {
    const [f] = new FrameDecoder().push(buildFrame({ type: T.PONG, flags: F_URGENT | 0x80, payload: Buffer.from('{"seq":1}') }));
    expect(f!.flags).toBe(0x81);
  });
});

/**
 * The frame layout read straight from DESIGN §3, independently of the decoder: the frames a well-behaved
 * decoder yields from `bytes`, then the refusal it must raise (or none, and how many bytes it still holds).
 */
function referenceParse(bytes: Buffer): { frames: Frame[]; refusal: string | null; rest: number } {
  const known = new Set<number>(Object.values(T));
  const frames: Frame[] = [];
  let at = 0;
  while (bytes.length - at >= HEADER_BYTES) {
    const h = bytes.subarray(at, at + HEADER_BYTES);
    if (h.toString('latin1', 0, 4) !== 'PCY1') return { frames, refusal: 'PC_ERR_BAD_MAGIC', rest: 0 };
    if (!known.has(h[4]!)) return { frames, refusal: 'PC_ERR_UNKNOWN_TYPE', rest: 0 };
    if (h[6] !== 0 || h[7] !== 0) return { frames, refusal: 'PC_ERR_MALFORMED', rest: 0 };
    const length = h.readUInt32BE(12);
    if (length > (h[4]! < 64 ? MAX_CONTROL_PAYLOAD : MAX_FRAME_PAYLOAD)) return { frames, refusal: 'PC_ERR_FRAME_TOO_LARGE', rest: 0 };
    // An unfinished frame: the decoder has taken its header and holds the payload bytes so far.
    if (bytes.length - at - HEADER_BYTES < length) return { frames, refusal: null, rest: bytes.length - at - HEADER_BYTES };
    const payload = bytes.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length);
    if (crc32(payload) >>> 0 !== h.readUInt32BE(16)) return { frames, refusal: 'PC_ERR_CHECKSUM', rest: 0 };
    frames.push({ type: h[4]!, flags: h[5]!, id: h.readUInt32BE(8), payload: ByteParts.of(payload) });
    at += HEADER_BYTES + length;
  }
  return { frames, refusal: null, rest: bytes.length - at };
}

/**
 * Push `bytes` cut at `points` through one decoder and hold it to the reference: the frames it yields are the
 * reference's (a refusal may drop those of the chunk it arrived in, never yield others), and it refuses exactly
 * when the reference does, with the same code; otherwise it holds just the unfinished frame's bytes.
 */
function decodeLikeReference(bytes: Buffer, points: readonly number[]): { refused: boolean; frames: number } {
  const want = referenceParse(bytes);
  const d = new FrameDecoder();
  const got: Frame[] = [];
  let caught: unknown;
  try {
    for (const c of cutAt(bytes, points)) got.push(...d.push(c));
  } catch (e) {
    caught = e;
  }
  if (want.refusal === null) {
    if (caught !== undefined) throw caught;
    expect(show(got)).toEqual(show(want.frames));
    expect(d.buffered).toBe(want.rest);
  } else {
    expectError(caught, ProtocolError, want.refusal as ProtocolError['code']);
    expect(show(got)).toEqual(show(want.frames.slice(0, got.length)));
    expect(d.buffered).toBe(0);
  }
  return { refused: want.refusal !== null, frames: got.length };
}

// readFrameHeader: the fields of a header crossing a stream (the tests' phase-aware fault layers follow the wire with it).
describe('readFrameHeader', () => {
  it("gives a header's fields as the builder wrote them, whatever follows it", () => {
    const payload = Buffer.from('0123456789abcdef');
    const bytes = buildFrame({ type: T.BLOCK_DATA, flags: F_URGENT, id: 0xfedcba98, payload });
    expect(readFrameHeader(bytes.subarray(0, HEADER_BYTES))).toEqual({
      type: T.BLOCK_DATA,
      flags: F_URGENT,
      id: 0xfedcba98,
      length: payload.length,
      crc: bytes.readUInt32BE(16),
    });
  });

  it('refuses what the decoder refuses: bad magic, unknown type, reserved bits, a length over the type cap', () => {
    expectThrows(() => readFrameHeader(buildFrame({ type: T.PING, magic: 0x00435931 })), ProtocolError, 'PC_ERR_BAD_MAGIC');
    expectThrows(() => readFrameHeader(buildFrame({ type: 200 })), ProtocolError, 'PC_ERR_UNKNOWN_TYPE');
    expectThrows(() => readFrameHeader(buildFrame({ type: T.PING, reserved: 1 })), ProtocolError, 'PC_ERR_MALFORMED');
    const oversize = buildFrame({ type: T.PING });
    oversize.writeUInt32BE(MAX_CONTROL_PAYLOAD + 1, 12);
    const e = expectThrows(() => readFrameHeader(oversize), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(e.message).toContain(`PING declares ${MAX_CONTROL_PAYLOAD + 1} bytes, cap ${MAX_CONTROL_PAYLOAD}`);
  });
});
