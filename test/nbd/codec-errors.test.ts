// Out-of-sync and malformed input: each decoder throws our NbdError with a stable code;
// well-framed but invalid option data comes back as { ok: false } for an error reply.
import { describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { ClientDecoder, decodeChunkBody } from '../../src/nbd/client-decoder.js';
import * as codec from '../../src/nbd/codec.js';
import { clientDecoderIn, drainAll, serverDecoderIn } from './helpers/decode.js';
import { ascii, hex } from './helpers/hex.js';

function thrown(fn: () => unknown): NbdError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NbdError);
    return err as NbdError;
  }
  throw new Error('expected a NbdError');
}

describe('server decoder refuses out-of-sync input', () => {
  it('bad option magic', () => {
    const d = serverDecoderIn('options');
    expect(thrown(() => drainAll(d, [hex`4948415645000000 00000007 00000000`])).code).toBe('NBD_ERR_BAD_MAGIC');
  });
  it('option length over the cap is refused before any data arrives', () => {
    const d = serverDecoderIn('options', { maxOptionLength: 1024 });
    expect(thrown(() => drainAll(d, [hex`49484156454F5054 00000007 00000401`])).code).toBe('NBD_ERR_TOO_LARGE');
  });
  it('bad request magic, including the extended-header magic we never negotiated', () => {
    expect(thrown(() => drainAll(serverDecoderIn('transmission'), [hex`25609514 0000 0000 0000000000000001 0000000000000000 00000200`])).code).toBe(
      'NBD_ERR_BAD_MAGIC',
    );
    expect(thrown(() => drainAll(serverDecoderIn('transmission'), [Buffer.concat([hex`21E41C71`, Buffer.alloc(28)])])).code).toBe('NBD_ERR_BAD_MAGIC');
  });
  it('a DoS-sized WRITE closes; a merely oversize one is skipped and flagged', () => {
    const dos = hex`25609513 0000 0001 0000000000000001 0000000000000000 04000001`; // 64 MiB + 1
    expect(thrown(() => drainAll(serverDecoderIn('transmission'), [dos])).code).toBe('NBD_ERR_TOO_LARGE');
    const big = hex`25609513 0000 0001 0000000000000001 0000000000000000 02000001`; // 32 MiB + 1
    const d = serverDecoderIn('transmission');
    const [msg] = drainAll(d, [big]) as codec.NbdRequest[];
    expect(msg).toMatchObject({ command: 1, length: 0x2000001, payloadDropped: true });
    expect(msg!.data).toBeUndefined();
  });
});

describe('client decoder refuses malformed replies', () => {
  it('bad greeting, oldstyle greeting', () => {
    expect(thrown(() => drainAll(clientDecoderIn('greeting'), [Buffer.alloc(18)])).code).toBe('NBD_ERR_BAD_MAGIC');
    const old = hex`4E42444D41474943 0000420281861253 0000`;
    expect(thrown(() => drainAll(clientDecoderIn('greeting'), [old])).code).toBe('NBD_ERR_HANDSHAKE');
  });
  it('structured chunk when structured replies were not negotiated', () => {
    const d = clientDecoderIn('simpleTransmission');
    expect(thrown(() => drainAll(d, [codec.encodeNoneChunk(1n)])).code).toBe('NBD_ERR_BAD_MAGIC');
  });
  it('simple reply for a cookie nobody sent', () => {
    const d = clientDecoderIn('transmission', new Map(), () => false);
    expect(thrown(() => drainAll(d, [hex`67446698 00000000 0000000000000063`])).code).toBe('NBD_ERR_UNKNOWN_COOKIE');
  });
  it('chunk longer than the cap is refused from its header', () => {
    const d = clientDecoderIn('transmission');
    expect(thrown(() => drainAll(d, [hex`668E33EF 0001 0001 0000000000000001 7FFFFFFF`])).code).toBe('NBD_ERR_TOO_LARGE');
  });
  it('chunk for an unknown cookie is refused from its header, before the payload arrives', () => {
    const d = new ClientDecoder({ simpleReplyLength: () => 0, knownCookie: (c) => c === 1n });
    d.push(hex`4E42444D41474943 49484156454F5054 0003`);
    d.next();
    d.enterTransmission(true);
    expect(thrown(() => drainAll(d, [hex`668E33EF 0001 0001 0000000000000002 01000000`])).code).toBe('NBD_ERR_UNKNOWN_COOKIE');
  });

  it('option reply with a bad magic', () => {
    expect(thrown(() => drainAll(clientDecoderIn('options'), [Buffer.alloc(20)])).code).toBe('NBD_ERR_BAD_MAGIC');
  });

  const bad: [string, number, boolean, Buffer][] = [
    ['NONE with payload', 0, true, hex`00`],
    ['NONE without DONE', 0, false, hex``],
    ['OFFSET_DATA without data', 1, true, hex`0000000000000000`],
    ['OFFSET_HOLE of wrong length', 2, true, hex`0000000000000000 00000001 00`],
    ['OFFSET_HOLE of size 0', 2, true, hex`0000000000000000 00000000`],
    ['BLOCK_STATUS without extents', 5, true, hex`00000001`],
    ['BLOCK_STATUS with a ragged extent', 5, true, hex`00000001 00001000 000000`],
    ['BLOCK_STATUS with a zero-length extent', 5, true, hex`00000001 00000000 00000000`],
    ['ERROR shorter than 6', 0x8001, true, hex`00000005 00`],
    ['ERROR whose message length disagrees', 0x8001, true, hex`00000005 0003 ${ascii('io')}`],
    ['ERROR with error 0', 0x8001, true, hex`00000000 0000`],
    ['ERROR_OFFSET without its offset', 0x8002, true, hex`00000005 0000 00000000`],
    ['unknown non-error type', 3, true, hex``],
  ];
  for (const [name, type, done, payload] of bad) {
    it(`malformed chunk: ${name}`, () => {
      expect(thrown(() => decodeChunkBody(type, done, payload)).code).toBe('NBD_ERR_MALFORMED');
    });
  }

  it('an unknown error chunk type fails its request only', () => {
    expect(decodeChunkBody(0x8123, true, hex`0000001C 0000`)).toEqual({ kind: 'error', chunkType: 0x8123, error: 28, message: '' });
    expect(decodeChunkBody(0x8123, true, hex``)).toMatchObject({ error: 22 });
  });
});

describe('option data: well-framed but invalid is a value, not an exception', () => {
  it('INFO/GO', () => {
    expect(codec.parseInfoRequest(hex`0000`)).toMatchObject({ ok: false });
    expect(codec.parseInfoRequest(hex`00000009 666F6F 0000`)).toMatchObject({ ok: false }); // namelen past the end
    expect(codec.parseInfoRequest(hex`00000003 666F6F 0002 0003`)).toMatchObject({ ok: false }); // count vs length
    const long = Buffer.concat([hex`00001001`, Buffer.alloc(4097, 0x61), hex`0000`]);
    expect(codec.parseInfoRequest(long)).toMatchObject({ ok: false, tooBig: true });
  });
  it('META_CONTEXT', () => {
    expect(codec.parseMetaContextRequest(hex`00000000 00000002 00000000`)).toMatchObject({ ok: false });
    expect(codec.parseMetaContextRequest(hex`00000000 FFFFFFFF`)).toMatchObject({ ok: false });
    expect(codec.parseMetaContextRequest(hex`00000000 00000001 00000005 6162`)).toMatchObject({ ok: false });
    expect(codec.parseMetaContextRequest(hex`00000000 00000000 00`)).toMatchObject({ ok: false });
    expect(codec.parseMetaContextRequest(hex`00000000 00000000`)).toEqual({ ok: true, exportName: '', queries: [] });
  });
});
