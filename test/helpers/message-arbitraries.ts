// fast-check arbitraries for every migration-wire message, each within the ranges decodeMessage accepts,
// so decode(encode(m)) must equal m exactly.
import fc from 'fast-check';
import type { Message } from '../../src/protocol/messages.js';

const U32 = 0xffffffff;
const PAGE = 4096;

export const u32 = fc.nat({ max: U32 });
export const safeU64 = fc.oneof(fc.nat(), fc.constantFrom(0, 2 ** 32, Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
/** Hex of an even number of digits (lowercase, as decodeMessage requires). */
export const hexString = fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString('hex'));
/** Any string JSON carries exactly (lone surrogates included), up to the 4096-unit field cap. */
export const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ maxLength: 4096 }));
const cap = fc.string({ maxLength: 64 });
const caps = fc.array(cap, { maxLength: 8 });
const bool = fc.boolean();
const id = u32;
const blockCls = fc.constantFrom(0 as const, 1 as const);

/** A JSON object that survives stringify/parse unchanged (no -0, no __proto__ keys). */
export const jsonObject: fc.Arbitrary<Record<string, unknown>> = fc
  .dictionary(fc.string({ maxLength: 10 }).filter((k) => k !== '__proto__'), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 })
  .filter((o) => !JSON.stringify(o).includes('__proto__'))
  .map((o) => JSON.parse(JSON.stringify(o)) as Record<string, unknown>);

export const controlMessage: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    type: fc.constant('HELLO' as const),
    versions: fc.tuple(u32, u32),
    caps,
    nonce: hexString,
    resumeSession: fc.option(text, { nil: undefined }),
    ticketId: fc.option(fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('hex')), { nil: undefined }),
  }).map(({ resumeSession, ticketId, ...m }) => ({
    ...m,
    ...(resumeSession === undefined ? {} : { resumeSession }),
    ...(ticketId === undefined ? {} : { ticketId }),
  })),
  fc.record({ type: fc.constant('CHALLENGE' as const), version: u32, caps, nonce: hexString, proof: hexString }),
  fc.record({ type: fc.constant('AUTH' as const), proof: hexString }),
  fc.record({ type: fc.constant('WELCOME' as const), sessionId: text, resumed: bool, phase: text }),
  fc.record({
    type: fc.constant('BEGIN' as const),
    guest: fc.option(fc.record({ persistent: jsonObject, transient: jsonObject }), { nil: null }),
    size: safeU64,
    blockSize: u32,
    cookie: text,
    image: fc.option(
      fc.option(fc.record({ host: fc.string({ minLength: 1, maxLength: 64 }), dev: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String), ino: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String) }), { nil: null }),
      { nil: undefined },
    ),
  }).map(({ image, ...m }) => (image === undefined ? m : { ...m, image })),
  fc.record({ type: fc.constant('PREPARED' as const), cookie: text }),
  fc.record({ type: fc.constant('RAM_ROUND_END' as const), round: u32, pagesSent: safeU64, dirtyRemaining: safeU64 }),
  fc.record({ type: fc.constant('DEVICE_STATE' as const), state: jsonObject, ramDigest: hexString }),
  fc.record({ type: fc.constant('FINISH_RESULT' as const), running: bool, error: fc.option(text, { nil: undefined }) }).map(({ error, ...m }) =>
    error === undefined ? m : { ...m, error },
  ),
  fc.record({ type: fc.constant('ABORT' as const), reason: text, code: fc.option(text, { nil: undefined }) }).map(({ code, ...m }) => (code === undefined ? m : { ...m, code })),
  fc.record({ type: fc.constant('COMPLETE' as const), blocks: safeU64, pristineBlocks: safeU64 }),
  fc.record({ type: fc.constant('DIGEST_MISMATCH' as const), blocks: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 20 }) }),
  fc.constant({ type: 'CONFIRM' as const }),
  fc.record({ type: fc.constant('ERROR' as const), code: text, message: text }),
  fc.record({ type: fc.constant('PING' as const), seq: u32 }),
  fc.record({ type: fc.constant('PONG' as const), seq: u32 }),
  fc.record({ type: fc.constant('EXTENTS_END' as const), count: safeU64 }),
  fc.record({ type: fc.constant('CREDIT' as const), bytes: safeU64 }),
  fc.constant({ type: 'GUEST_STREAM_END' as const }),
);

const ramPages: fc.Arbitrary<Message> = fc
  .array(fc.record({ page: fc.nat({ max: 0x7fffffff }), zero: bool }), { maxLength: 6 })
  .chain((pages) => {
    const dataPages = pages.filter((p) => !p.zero).length;
    return fc.uint8Array({ minLength: 8, maxLength: 8 }).map((seed) => {
      // Page bytes: a cheap pattern from 8 random bytes, so pages differ without generating 4 KiB each.
      const data = Buffer.alloc(dataPages * PAGE);
      for (let i = 0; i < data.length; i++) data[i] = seed[i % 8]! ^ (i >>> 3);
      return { type: 'RAM_PAGES' as const, indices: pages.map((p) => (p.zero ? (p.page | 0x80000000) >>> 0 : p.page)), data };
    });
  });

export const dataMessage: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ type: fc.constant('EXTENTS' as const), runs: fc.array(fc.record({ offset: safeU64, length: safeU64 }), { maxLength: 8 }) }),
  ramPages,
  fc.record({ type: fc.constant('BLOCK_REQ' as const), id, offset: safeU64, length: fc.integer({ min: 1, max: 16 * 1024 * 1024 }), cls: blockCls }),
  fc.record({
    type: fc.constant('BLOCK_DATA' as const),
    id,
    offset: safeU64,
    data: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a)),
    done: bool,
    urgent: bool,
  }),
  fc.record({ type: fc.constant('BLOCK_ZERO' as const), id, offset: safeU64, length: fc.integer({ min: 1, max: U32 }), done: bool, urgent: bool }),
  // The encoder keeps at most 512 UTF-16 units of the message, and a lone surrogate does not survive UTF-8.
  fc.record({
    type: fc.constant('BLOCK_ERR' as const),
    id,
    errno: u32,
    message: fc.string({ unit: 'grapheme', maxLength: 100 }).filter((s) => s.length <= 512),
  }),
  fc.record({ type: fc.constant('GUEST_STREAM' as const), data: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a)) }),
  fc.record({ type: fc.constant('BLOCK_DIGESTS' as const), entries: fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff })), { maxLength: 20 }) }),
);

export const anyMessage: fc.Arbitrary<Message> = fc.oneof(controlMessage, dataMessage);

/** Short sequences of messages. */
export const messageSequence = fc.array(anyMessage, { minLength: 1, maxLength: 12 });
