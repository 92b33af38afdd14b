// Properties of the codec: encoded message sequences cut at random points decode to the same
// messages, in both directions and every phase; random bytes only ever raise our NbdError.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { ClientDecoder } from '../../src/nbd/client-decoder.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { ServerDecoder } from '../../src/nbd/server-decoder.js';
import { drainAll, serverDecoderIn } from './helpers/decode.js';
import { fcParams } from './helpers/fc-params.js';
import { hex } from './helpers/hex.js';

/** Cut bytes at the given (arbitrary) points. */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const at = [...new Set(points.map((p) => (bytes.length === 0 ? 0 : p % (bytes.length + 1))))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of at) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

const cuts = fc.array(fc.nat(), { maxLength: 12 });
const smallBytes = (max: number, min = 0) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));
const u64Safe = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const nonZeroU32 = fc.integer({ min: 1, max: 0xffffffff });
const text = fc.string({ maxLength: 20, unit: 'grapheme-ascii' });

// ---------- server -> client, transmission with structured replies ----------

type ReplySpec =
  | { kind: 'simple'; error: number; read: number; data: Buffer }
  | { kind: 'chunk'; done: boolean; body: codec.ChunkBody };

const bodyArb: fc.Arbitrary<codec.ChunkBody> = fc.oneof(
  fc.record({ kind: fc.constant('data' as const), offset: u64Safe, data: smallBytes(64, 1) }),
  fc.record({ kind: fc.constant('hole' as const), offset: u64Safe, length: nonZeroU32 }),
  fc.record({
    kind: fc.constant('blockStatus' as const),
    contextId: u32,
    extents: fc.array(fc.record({ length: nonZeroU32, flags: u32 }), { minLength: 1, maxLength: 6 }),
  }),
  fc.record({ kind: fc.constant('error' as const), chunkType: fc.constant(C.NBD_REPLY_TYPE_ERROR), error: nonZeroU32, message: text }),
  fc.record({
    kind: fc.constant('error' as const),
    chunkType: fc.constant(C.NBD_REPLY_TYPE_ERROR_OFFSET),
    error: nonZeroU32,
    message: text,
    offset: u64Safe,
  }),
);

const replyArb: fc.Arbitrary<ReplySpec> = fc.oneof(
  fc.record({ kind: fc.constant('simple' as const), error: u32, read: fc.integer({ min: 0, max: 48 }), data: fc.constant(Buffer.alloc(0)) }).chain((r) =>
    smallBytes(r.read, r.read).map((data) => ({ ...r, data })),
  ),
  fc.record({ kind: fc.constant('chunk' as const), done: fc.boolean(), body: bodyArb }),
  fc.constant<ReplySpec>({ kind: 'chunk', done: true, body: { kind: 'none' } }),
);

function encodeReply(spec: ReplySpec, cookie: bigint): { bytes: Buffer; message: codec.ServerMessage } {
  if (spec.kind === 'simple') {
    const withData = spec.error === 0 && spec.read > 0;
    return {
      bytes: Buffer.concat([codec.encodeSimpleReply(cookie, spec.error), withData ? spec.data : Buffer.alloc(0)]),
      message: withData ? { type: 'simpleReply', error: spec.error, cookie, data: spec.data } : { type: 'simpleReply', error: spec.error, cookie },
    };
  }
  const flags = spec.done ? C.NBD_REPLY_FLAG_DONE : 0;
  const b = spec.body;
  let bytes: Buffer;
  switch (b.kind) {
    case 'none':
      bytes = codec.encodeNoneChunk(cookie);
      break;
    case 'data':
      bytes = Buffer.concat([codec.encodeOffsetDataHeader(cookie, flags, b.offset, b.data.length), b.data]);
      break;
    case 'hole':
      bytes = codec.encodeOffsetHole(cookie, flags, b.offset, b.length);
      break;
    case 'blockStatus':
      bytes = codec.encodeBlockStatusChunk(cookie, flags, b.contextId, b.extents);
      break;
    case 'error':
      bytes = codec.encodeErrorChunk(cookie, flags, b.error, b.message, b.offset);
      break;
  }
  return { bytes, message: { type: 'chunk', flags, cookie, done: spec.done, body: b } };
}

// ---------- client -> server ----------

const optionArb = fc.record({ option: u32, data: smallBytes(64) });

const requestArb = fc
  .record({ flags: fc.integer({ min: 0, max: 0xffff }), command: fc.integer({ min: 0, max: 12 }), cookie: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), offset: u64Safe, length: u32 })
  .chain((r) =>
    r.command === C.NBD_CMD_WRITE
      ? smallBytes(64).map((data) => ({ ...r, length: data.length, data }))
      : fc.constant({ ...r, data: undefined as Buffer | undefined }),
  );

describe('codec round trips cut at random points', () => {
  it('server -> client: replies and chunks in transmission', () => {
    fc.assert(
      fc.property(fc.array(replyArb, { maxLength: 20 }), cuts, (specs, points) => {
        const encoded = specs.map((s, i) => encodeReply(s, BigInt(i + 1)));
        const reads = new Map(specs.map((s, i) => [BigInt(i + 1), s.kind === 'simple' ? s.read : 0] as const));
        const d = new ClientDecoder({ simpleReplyLength: (c) => reads.get(c) });
        d.push(hex`4E42444D41474943 49484156454F5054 0003`);
        d.next();
        d.enterTransmission(true);
        expect(drainAll(d, cut(Buffer.concat(encoded.map((e) => e.bytes)), points))).toEqual(encoded.map((e) => e.message));
      }),
      fcParams(),
    );
  });

  it('server -> client: option replies', () => {
    const replyTypeArb = fc.oneof(fc.constant(C.NBD_REP_ACK), fc.constant(C.NBD_REP_INFO), fc.constant(C.NBD_REP_ERR_UNSUP), u32);
    fc.assert(
      fc.property(fc.array(fc.record({ option: u32, replyType: replyTypeArb, data: smallBytes(40) }), { maxLength: 20 }), cuts, (replies, points) => {
        const bytes = Buffer.concat([hex`4E42444D41474943 49484156454F5054 0001`, ...replies.map((r) => codec.encodeOptionReply(r.option, r.replyType, r.data))]);
        const d = new ClientDecoder({ simpleReplyLength: () => undefined });
        const got = drainAll(d, cut(bytes, points));
        expect(got).toEqual([{ type: 'greeting', flags: 1 }, ...replies.map((r) => ({ type: 'optionReply', ...r }))]);
      }),
      fcParams(),
    );
  });

  it('client -> server: flags, options, then requests with write payloads', () => {
    fc.assert(
      fc.property(fc.array(optionArb, { maxLength: 8 }), fc.array(requestArb, { maxLength: 16 }), cuts, cuts, (options, requests, p1, p2) => {
        const d = new ServerDecoder();
        const optionBytes = Buffer.concat([codec.encodeClientFlags(3), ...options.map((o) => codec.encodeOption(o.option, o.data))]);
        const got1 = drainAll(d, cut(optionBytes, p1));
        expect(got1).toEqual([{ type: 'clientFlags', flags: 3 }, ...options.map((o) => ({ type: 'option', ...o }))]);
        d.enterTransmission();
        const reqBytes = Buffer.concat(requests.flatMap((r) => [codec.encodeRequest(r), r.data ?? Buffer.alloc(0)]));
        const got2 = drainAll(d, cut(reqBytes, p2));
        expect(got2).toEqual(
          requests.map((r) => {
            const m: codec.NbdRequest = { type: 'request', flags: r.flags, command: r.command, cookie: r.cookie, offset: r.offset, length: r.length };
            if (r.data && r.data.length > 0) m.data = r.data;
            return m;
          }),
        );
      }),
      fcParams(),
    );
  });

  it('an oversize WRITE payload is skipped wherever it is cut, and the next request decodes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 65, max: 128 }), cuts, (len, points) => {
        const d = serverDecoderIn('transmission', { maxPayload: 64, dosPayload: 128 });
        const bytes = Buffer.concat([
          codec.encodeRequest({ flags: 0, command: C.NBD_CMD_WRITE, cookie: 1n, offset: 0, length: len }),
          Buffer.alloc(len, 0xaa),
          codec.encodeRequest({ flags: 0, command: C.NBD_CMD_READ, cookie: 2n, offset: 0, length: 512 }),
        ]);
        const got = drainAll(d, cut(bytes, points)) as codec.NbdRequest[];
        expect(got.map((m) => [m.cookie, m.payloadDropped ?? false, m.data])).toEqual([
          [1n, true, undefined],
          [2n, false, undefined],
        ]);
      }),
      fcParams(),
    );
  });
});

describe('random bytes only ever raise NbdError', () => {
  function onlyNbdErrors(feed: () => void): void {
    try {
      feed();
    } catch (err) {
      if (!(err instanceof NbdError)) throw err;
    }
  }

  const noise = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));

  for (const phase of ['clientFlags', 'options', 'transmission'] as const) {
    it(`server decoder, phase ${phase}`, () => {
      fc.assert(
        fc.property(noise, cuts, (bytes, points) => {
          const d = serverDecoderIn(phase, { maxOptionLength: 64, maxPayload: 64, dosPayload: 256 });
          onlyNbdErrors(() => drainAll(d, cut(bytes, points)));
        }),
        fcParams(500),
      );
    });
  }

  for (const phase of ['greeting', 'options', 'transmission', 'simple', 'exportName'] as const) {
    it(`client decoder, phase ${phase}`, () => {
      fc.assert(
        fc.property(noise, cuts, fc.integer({ min: 0, max: 64 }), fc.boolean(), (bytes, points, readLen, known) => {
          const d = new ClientDecoder({ simpleReplyLength: () => (known ? readLen : undefined), maxChunkLength: 256, maxOptionReplyLength: 64 });
          if (phase !== 'greeting') {
            d.push(hex`4E42444D41474943 49484156454F5054 0003`);
            d.next();
          }
          if (phase === 'transmission') d.enterTransmission(true);
          if (phase === 'simple') d.enterTransmission(false);
          if (phase === 'exportName') d.expectExportNameReply(known);
          onlyNbdErrors(() => drainAll(d, cut(bytes, points)));
        }),
        fcParams(500),
      );
    });
  }

  it('option data parsers never throw on random input', () => {
    fc.assert(
      fc.property(noise, (bytes) => {
        const a = codec.parseInfoRequest(bytes);
        const b = codec.parseMetaContextRequest(bytes);
        expect(typeof a.ok).toBe('boolean');
        expect(typeof b.ok).toBe('boolean');
      }),
      fcParams(500),
    );
  });

  it('option reply parsers raise only NbdError', () => {
    fc.assert(
      fc.property(noise, (bytes) => {
        onlyNbdErrors(() => codec.parseInfoReply(bytes));
        onlyNbdErrors(() => codec.parseRepServer(bytes));
        onlyNbdErrors(() => codec.parseRepMetaContext(bytes));
      }),
      fcParams(500),
    );
  });
});
