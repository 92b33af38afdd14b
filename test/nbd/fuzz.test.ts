// Fuzz both NBD streaming decoders: the server side (client flags, option requests, transmission requests
// with WRITE payloads) and the client side (greeting, option replies, EXPORT_NAME reply, simple replies and
// structured chunks, with some cookies outstanding as READs), plus the option-data parsers each side runs on
// what its decoder yields. Inputs mix pure random bytes with mutated valid messages built by the codec's own
// encoders, cut at a random point; untouched valid sequences must decode whole. Only our errors may escape:
// NbdError with an NBD_ERR_* code (never a RangeError, TypeError or a hang).
// Normal runs push 100,000 inputs per side (a few seconds); the soak pushes a million each:
//   FUZZ_INPUTS=1000000 npx vitest run test/nbd/fuzz.test.ts
// Replay a failure with the FC_SEED (and FUZZ_INPUTS) it prints.
import { describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { ClientDecoder } from '../../src/nbd/client-decoder.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { ServerDecoder } from '../../src/nbd/server-decoder.js';
import { FC_SEED, replayHint } from '../helpers/fc.js';
import { sfc32 } from '../helpers/sfc32.js';

/** Inputs per decoder: FUZZ_INPUTS, else 100,000. */
const INPUTS = process.env.FUZZ_INPUTS ? Number(process.env.FUZZ_INPUTS) : 100_000;
if (!Number.isSafeInteger(INPUTS) || INPUTS < 1) throw new Error(`FUZZ_INPUTS must be a positive integer, got ${process.env.FUZZ_INPUTS}`);


interface Rng {
  u32: () => number;
  below: (n: number) => number;
  bytes: (n: number) => Buffer;
  pick: <T>(xs: readonly T[]) => T;
}

function rng(seed: number): Rng {
  const u32 = sfc32(seed);
  const below = (n: number) => (n <= 0 ? 0 : u32() % n);
  return {
    u32,
    below,
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = u32() & 0xff;
      return b;
    },
    pick: (xs) => xs[below(xs.length)]!,
  };
}

const INTERESTING_BYTES = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0x25, 0x60, 0x95, 0x13, 0x67, 0x44, 0x66, 0x98, 0x8e, 0x33, 0xef];
const INTERESTING_U32 = [0, 1, 2, 6, 7, 8, 12, 13, 14, 0x7fffffff, 0x80000000, 0x80000001, 0xffffffff, 4096, 4097, 65536, 1 << 20, (1 << 20) + 1];

/** Byte-level mutations: set, flip, interesting byte or u32, insert, delete, truncate, extend, splice. */
function mutate(r: Rng, base: Buffer, corpus: readonly Buffer[]): Buffer {
  let b = Buffer.from(base);
  const edits = 1 + r.below(4);
  for (let e = 0; e < edits; e++) {
    const at = r.below(b.length);
    switch (r.below(9)) {
      case 0: b[at] = r.u32() & 0xff; break;
      case 1: b[at]! ^= 1 << r.below(8); break;
      case 2: b[at] = r.pick(INTERESTING_BYTES); break;
      case 3: if (at + 4 <= b.length) b.writeUInt32BE(r.pick(INTERESTING_U32), at); break;
      case 4: b = Buffer.concat([b.subarray(0, at), r.bytes(1 + r.below(4)), b.subarray(at)]); break;
      case 5: b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.below(4))]); break;
      case 6: b = b.subarray(0, at); break;
      case 7: b = Buffer.concat([b, r.bytes(1 + r.below(24))]); break;
      default: b = Buffer.concat([b, r.pick(corpus)]); break;
    }
  }
  return b;
}

/** Our decoders' errors: NbdError with an NBD code. Anything else fails the run. */
/** The head of an input, in hex, for a failure message. */
function hexOf(input: Buffer): string {
  return input.toString('hex').slice(0, 2000);
}

/** A valid stream (expected >= 0) must decode to exactly that many messages. */
function expectMessageCount(n: number, input: Buffer, got: number, expected: number): void {
  if (expected >= 0 && got !== expected) {
    expect.fail(`valid stream #${n} gave ${got} messages, expected ${expected} (${replayHint(FC_SEED)})\ninput: ${hexOf(input)}`);
  }
}

/** Print a fuzz run's figures and check every input was of some kind. */
function reportRun(label: string, started: number, kinds: Record<string, number>, outcomes: Record<string, number>, codes: Record<string, number>): void {
  const ms = performance.now() - started;
  console.log(
    `${label} fuzz: ${INPUTS} inputs in ${ms.toFixed(0)} ms (${((INPUTS / ms) * 1000).toFixed(0)}/s), ${replayHint(FC_SEED)}; ` +
      `kinds ${JSON.stringify(kinds)}; outcomes ${JSON.stringify(outcomes)}; codes ${JSON.stringify(codes)}`,
  );
  expect(Object.values(kinds).reduce((a, b) => a + b, 0)).toBe(INPUTS);
}

function checkError(e: unknown, what: string, n: number, input: Buffer, codes: Record<string, number>): void {
  if (e instanceof NbdError && e.code.startsWith('NBD_ERR_')) {
    codes[e.code] = (codes[e.code] ?? 0) + 1;
    return;
  }
  expect.fail(
    `${what} input #${n} (${replayHint(FC_SEED)} FUZZ_INPUTS=${n + 1}) raised ${e instanceof Error ? `${e.constructor.name}${'code' in e ? ` ${String(e.code)}` : ''}: ${e.message}` : String(e)}` +
      `\ninput: ${hexOf(input)}`,
  );
}

/** Feed `input` cut at `cut` (0: whole), pulling every message; `onMessage` may change the decoder's phase. */
function feedCut<T>(d: { push(b: Buffer): void; next(): T | undefined }, input: Buffer, cut: number, onMessage: (m: T) => void): void {
  const pieces = cut === 0 ? [input] : [input.subarray(0, cut), input.subarray(cut)];
  for (const p of pieces) {
    d.push(p);
    for (let m = d.next(); m !== undefined; m = d.next()) onMessage(m);
  }
}

// ---------------------------------------------------------------- server side (client -> server bytes)

type ServerStart = 'clientFlags' | 'options' | 'transmission';

function serverCorpus(r: Rng): { options: Buffer[]; requests: Buffer[]; flags: Buffer[]; bigWrites: Buffer[]; stayOptions: Buffer[] } {
  const names = ['', 'disk', 'x'.repeat(300), 'é'];
  const options: Buffer[] = [];
  for (const name of names) {
    options.push(codec.encodeExportNameOption(name));
    for (const opt of [C.NBD_OPT_INFO, C.NBD_OPT_GO]) {
      options.push(codec.encodeInfoRequest(opt, name, []), codec.encodeInfoRequest(opt, name, [C.NBD_INFO_EXPORT, C.NBD_INFO_BLOCK_SIZE, C.NBD_INFO_NAME, 9]));
    }
    for (const opt of [C.NBD_OPT_LIST_META_CONTEXT, C.NBD_OPT_SET_META_CONTEXT]) {
      options.push(codec.encodeMetaContextRequest(opt, name, []), codec.encodeMetaContextRequest(opt, name, [C.NBD_META_BASE_ALLOCATION, 'qemu:dirty-bitmap:x', '']));
    }
  }
  for (const opt of [C.NBD_OPT_ABORT, C.NBD_OPT_LIST, C.NBD_OPT_PEEK_EXPORT, C.NBD_OPT_STARTTLS, C.NBD_OPT_STRUCTURED_REPLY, C.NBD_OPT_EXTENDED_HEADERS, 0xdead]) {
    options.push(codec.encodeOption(opt), codec.encodeOption(opt, r.bytes(r.below(40))));
  }
  const requests: Buffer[] = [];
  const bigWrites: Buffer[] = [];
  for (let cmd = 0; cmd <= 9; cmd++) {
    for (const [offset, length] of [[0, 512], [4096, 0], [2 ** 40, 4096], [1, 1], [0, 0xffffffff]] as const) {
      const cookie = BigInt(r.u32()) << 16n;
      const head = codec.encodeRequest({ flags: r.below(0x40), command: cmd, cookie, offset, length });
      // A WRITE carries its payload; one declaring 4 GiB is only a header, kept for the mutation corpus.
      if (cmd !== C.NBD_CMD_WRITE) requests.push(head);
      else if (length <= 4096) requests.push(Buffer.concat([head, r.bytes(length)]));
      else bigWrites.push(head);
    }
  }
  const flags = [0, 1, 2, 3, 0xffffffff].map((f) => codec.encodeClientFlags(f));
  // Options that leave the option phase as it is (GO and EXPORT_NAME enter transmission).
  const stayOptions = options.filter((o) => o.readUInt32BE(8) !== C.NBD_OPT_GO && o.readUInt32BE(8) !== C.NBD_OPT_EXPORT_NAME);
  return { options, requests, flags, bigWrites, stayOptions };
}

/** A valid client stream from `start`: flags, options (a GO or EXPORT_NAME enters transmission), requests. */
function validClientStream(r: Rng, start: ServerStart, corpus: ReturnType<typeof serverCorpus>): { bytes: Buffer; messages: number; enters: boolean } {
  const parts: Buffer[] = [];
  let messages = 0;
  if (start === 'clientFlags') {
    parts.push(r.pick(corpus.flags));
    messages++;
  }
  let enters = false;
  if (start !== 'transmission') {
    for (let i = r.below(4); i > 0; i--) {
      parts.push(r.pick(corpus.stayOptions));
      messages++;
    }
    if (r.below(2) === 0) return { bytes: Buffer.concat(parts), messages, enters };
    parts.push(codec.encodeInfoRequest(C.NBD_OPT_GO, 'disk', []));
    messages++;
    enters = true;
  }
  for (let i = r.below(5); i > 0; i--) {
    parts.push(r.pick(corpus.requests));
    messages++;
  }
  return { bytes: Buffer.concat(parts), messages, enters };
}

describe('NBD decoder fuzz', () => {
  it(`${INPUTS} inputs through ServerDecoder (option and transmission phases) raise only our errors`, () => {
    const r = rng(FC_SEED);
    const corpus = serverCorpus(r);
    const all = [...corpus.options, ...corpus.requests, ...corpus.flags, ...corpus.bigWrites];
    const kinds = { random: 0, header: 0, mutated: 0, valid: 0 };
    const outcomes = { messages: 0, options: 0, requests: 0, dropped: 0, clean: 0, errors: 0, invalidOptionData: 0 };
    const codes: Record<string, number> = {};
    const starts: readonly ServerStart[] = ['clientFlags', 'options', 'options', 'transmission', 'transmission'];
    const stackLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    const started = performance.now();
    try {
      for (let n = 0; n < INPUTS; n++) {
        const start = r.pick(starts);
        const kind = r.below(10);
        // Small caps on some decoders (never for untouched valid streams) reach the refuse / skip paths.
        const small = kind < 8 && r.below(3) === 0;
        const d = new ServerDecoder(small ? { maxOptionLength: 64 + r.below(256), maxPayload: 64 + r.below(512), dosPayload: 4096 } : {});
        if (start !== 'clientFlags') {
          d.push(codec.encodeClientFlags(3));
          d.next();
          if (start === 'transmission') d.enterTransmission();
        }
        let input: Buffer;
        let expectMessages = -1;
        if (kind === 0) {
          kinds.random++;
          input = r.bytes(r.below(64));
        } else if (kind <= 2) {
          // A correct magic over random fields: the decoder's length and command handling see garbage.
          kinds.header++;
          if (start === 'transmission') {
            input = Buffer.concat([r.bytes(28), r.bytes(r.below(32))]);
            input.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
            if (r.below(2) === 0) input.writeUInt16BE(C.NBD_CMD_WRITE, 6);
            if (r.below(2) === 0) input.writeUInt32BE(r.below(600), 24);
          } else {
            input = Buffer.concat([r.bytes(16), r.bytes(r.below(48))]);
            input.writeBigUInt64BE(C.NBD_IHAVEOPT, 0);
            if (r.below(2) === 0) input.writeUInt32BE(r.below(300), 12);
          }
          if (start === 'clientFlags') input = Buffer.concat([r.bytes(4), input]);
        } else if (kind <= 7) {
          kinds.mutated++;
          const v = validClientStream(r, start, corpus);
          input = mutate(r, v.bytes.length > 0 ? v.bytes : r.pick(all), all);
        } else {
          kinds.valid++;
          const v = validClientStream(r, start, corpus);
          input = v.bytes;
          expectMessages = v.messages;
        }
        const cut = r.below(input.length + 1);
        let got = 0;
        try {
          feedCut(d, input, cut, (m) => {
            got++;
            outcomes.messages++;
            if (m.type === 'option') {
              outcomes.options++;
              // What the server's negotiation does next: parse the data (never throws), maybe enter transmission.
              if (m.option === C.NBD_OPT_INFO || m.option === C.NBD_OPT_GO) {
                const p = codec.parseInfoRequest(m.data);
                if (!p.ok) outcomes.invalidOptionData++;
                if (m.option === C.NBD_OPT_GO && p.ok) d.enterTransmission();
              } else if (m.option === C.NBD_OPT_LIST_META_CONTEXT || m.option === C.NBD_OPT_SET_META_CONTEXT) {
                if (!codec.parseMetaContextRequest(m.data).ok) outcomes.invalidOptionData++;
              } else if (m.option === C.NBD_OPT_EXPORT_NAME) {
                d.enterTransmission();
              }
            } else if (m.type === 'request') {
              outcomes.requests++;
              if (m.payloadDropped) outcomes.dropped++;
              else if (m.command === C.NBD_CMD_WRITE && m.length > 0 && m.data?.length !== m.length) throw new Error(`WRITE payload of ${m.data?.length}, header says ${m.length}`);
            }
          });
          outcomes.clean++;
          // Memory stays bounded by what was sent: nothing is invented or duplicated.
          if (d.buffered > input.length) throw new Error(`decoder holds ${d.buffered} bytes of a ${input.length}-byte input`);
        } catch (e) {
          if (expectMessages >= 0) throw new Error(`valid stream #${n} was refused (${replayHint(FC_SEED)}): ${String(e)}\ninput: ${hexOf(input)}`);
          outcomes.errors++;
          checkError(e, 'ServerDecoder', n, input, codes);
        }
        expectMessageCount(n, input, got, expectMessages);
      }
    } finally {
      Error.stackTraceLimit = stackLimit;
    }
    reportRun('nbd server-decoder', started, kinds, outcomes, codes);
    if (INPUTS >= 10_000) {
      // The mix reaches both outcomes and the deep paths.
      expect(outcomes.requests).toBeGreaterThan(INPUTS / 20);
      expect(outcomes.options).toBeGreaterThan(INPUTS / 20);
      expect(outcomes.dropped).toBeGreaterThan(0);
      expect(outcomes.errors).toBeGreaterThan(INPUTS / 10);
      for (const code of ['NBD_ERR_BAD_MAGIC', 'NBD_ERR_TOO_LARGE']) expect(codes[code], code).toBeGreaterThan(0);
    }
  }, 300_000);

  it(`${INPUTS} inputs through ClientDecoder (option replies, simple and structured replies) raise only our errors`, () => {
    const r = rng(FC_SEED ^ 0x6e6264);
    // Cookies outstanding: READs (their simple replies carry data) and non-READs; others are unknown.
    const reads = new Map<bigint, number>([[1n, 512], [2n, 4096], [3n, 1], [0x1000000000000n, 64]]);
    const nonReads = new Set<bigint>([4n, 5n, 0xffffffffffffffffn]);
    const simpleReplyLength = (c: bigint) => reads.get(c) ?? (nonReads.has(c) ? 0 : undefined);
    const knownCookie = (c: bigint) => reads.has(c) || nonReads.has(c);
    const cookies = [...reads.keys(), ...nonReads];

    // Corpus, by phase.
    const greeting = [codec.encodeGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES), codec.encodeGreeting(0), codec.encodeGreeting(0xffff)];
    const optionReplies: Buffer[] = [];
    for (const opt of [C.NBD_OPT_GO, C.NBD_OPT_INFO, C.NBD_OPT_LIST, C.NBD_OPT_SET_META_CONTEXT, C.NBD_OPT_STRUCTURED_REPLY, 0xdead]) {
      optionReplies.push(
        codec.encodeAck(opt),
        codec.encodeOptionError(opt, C.NBD_REP_ERR_UNSUP, 'not here'),
        codec.encodeOptionError(opt, C.NBD_REP_ERR_UNKNOWN),
        codec.encodeRepServer(opt, 'disk', 'the disk'),
        codec.encodeRepServer(opt, ''),
        codec.encodeInfoExport(opt, 2 ** 30, C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH),
        codec.encodeInfoName(opt, 'disk'),
        codec.encodeInfoDescription(opt, 'a disk'),
        codec.encodeInfoBlockSize(opt, { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 }),
        codec.encodeRepMetaContext(opt, 1, C.NBD_META_BASE_ALLOCATION),
        codec.encodeOptionReply(opt, C.NBD_REP_INFO, Buffer.from([0, 77, 1, 2])),
      );
    }
    const exportNameReplies = [codec.encodeExportNameReply(2 ** 30, 0x1ff, false), codec.encodeExportNameReply(4096, 1, true)];
    const simple: Buffer[] = [];
    const chunks: Buffer[] = [];
    for (const cookie of cookies) {
      const readLen = reads.get(cookie);
      // A successful READ's simple reply carries its data; any error reply, and other commands' replies, none.
      simple.push(codec.encodeSimpleReply(cookie, C.NBD_EIO));
      simple.push(readLen !== undefined ? Buffer.concat([codec.encodeSimpleReply(cookie, 0), r.bytes(readLen)]) : codec.encodeSimpleReply(cookie, 0));
      const d = r.bytes(1 + r.below(64));
      chunks.push(
        codec.encodeNoneChunk(cookie),
        Buffer.concat([codec.encodeOffsetDataHeader(cookie, 0, 4096, d.length), d]),
        Buffer.concat([codec.encodeOffsetDataHeader(cookie, C.NBD_REPLY_FLAG_DONE, 0, d.length), d]),
        codec.encodeOffsetHole(cookie, C.NBD_REPLY_FLAG_DONE, 8192, 4096),
        codec.encodeBlockStatusChunk(cookie, C.NBD_REPLY_FLAG_DONE, 1, [{ length: 4096, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO }, { length: 512, flags: 0 }]),
        codec.encodeErrorChunk(cookie, C.NBD_REPLY_FLAG_DONE, C.NBD_EIO, 'read failed'),
        codec.encodeErrorChunk(cookie, 0, C.NBD_EINVAL, 'bad', 123),
        codec.encodeChunkHeader(C.NBD_REPLY_FLAG_DONE, 0x8077, cookie, 0),
      );
    }
    const all = [...greeting, ...optionReplies, ...exportNameReplies, ...simple, ...chunks];

    type Start = 'greeting' | 'options' | 'exportName' | 'exportNameNoZeroes' | 'structured' | 'simple';
    const starts: readonly Start[] = ['greeting', 'options', 'options', 'exportName', 'exportNameNoZeroes', 'structured', 'structured', 'structured', 'simple'];
    const validFor = (start: Start): { bytes: Buffer; messages: number } => {
      const parts: Buffer[] = [];
      let from: Start = start;
      if (from === 'greeting') {
        parts.push(greeting[0]!);
        from = 'options';
      }
      if (from === 'options') for (let i = 1 + r.below(4); i > 0; i--) parts.push(r.pick(optionReplies));
      else if (from === 'exportName') parts.push(exportNameReplies[0]!);
      else if (from === 'exportNameNoZeroes') parts.push(exportNameReplies[1]!);
      else for (let i = 1 + r.below(5); i > 0; i--) parts.push(r.pick(from === 'simple' || r.below(3) === 0 ? simple : chunks));
      return { bytes: Buffer.concat(parts), messages: parts.length };
    };

    const kinds = { random: 0, header: 0, mutated: 0, valid: 0 };
    const outcomes = { messages: 0, optionReplies: 0, simpleReplies: 0, chunks: 0, clean: 0, errors: 0 };
    const codes: Record<string, number> = {};
    const stackLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    const started = performance.now();
    try {
      for (let n = 0; n < INPUTS; n++) {
        const start = r.pick(starts);
        const kind = r.below(10);
        const small = kind < 8 && r.below(3) === 0;
        const d = new ClientDecoder({
          simpleReplyLength,
          ...(r.below(2) === 0 ? { knownCookie } : {}),
          ...(small ? { maxOptionReplyLength: 16 + r.below(64), maxChunkLength: 16 + r.below(128) } : {}),
        });
        if (start !== 'greeting') {
          d.push(greeting[0]!);
          d.next();
          if (start === 'structured') d.enterTransmission(true);
          else if (start === 'simple') d.enterTransmission(false);
          else if (start === 'exportName') d.expectExportNameReply(false);
          else if (start === 'exportNameNoZeroes') d.expectExportNameReply(true);
        }
        let input: Buffer;
        let expectMessages = -1;
        if (kind === 0) {
          kinds.random++;
          input = r.bytes(r.below(64));
        } else if (kind <= 2) {
          // A correct magic over random fields (a known cookie half the time).
          kinds.header++;
          if (start === 'structured' || start === 'simple') {
            const structured = start === 'structured' && r.below(3) !== 0;
            input = r.bytes(structured ? 20 + r.below(48) : 16 + r.below(48));
            input.writeUInt32BE(structured ? C.NBD_STRUCTURED_REPLY_MAGIC : C.NBD_SIMPLE_REPLY_MAGIC, 0);
            if (r.below(2) === 0) input.writeBigUInt64BE(r.pick(cookies), 8);
            if (structured) {
              if (r.below(2) === 0) input.writeUInt16BE(r.pick([0, 1, 2, 5, 6, 0x8001, 0x8002, 0x8003, 7]), 6);
              if (r.below(2) === 0) input.writeUInt32BE(r.below(input.length - 19), 16);
            } else if (r.below(2) === 0) input.writeUInt32BE(0, 4);
          } else if (start === 'options') {
            input = r.bytes(20 + r.below(48));
            input.writeBigUInt64BE(C.NBD_REP_MAGIC, 0);
            if (r.below(2) === 0) input.writeUInt32BE(r.pick([1, 2, 3, 4, 0x80000001]), 12);
            if (r.below(2) === 0) input.writeUInt32BE(r.below(input.length - 19), 16);
          } else {
            input = r.bytes(r.below(160));
            if (input.length >= 16) input.writeBigUInt64BE(C.NBD_MAGIC, 0);
          }
        } else if (kind <= 7) {
          kinds.mutated++;
          input = mutate(r, validFor(start).bytes, all);
        } else {
          kinds.valid++;
          const v = validFor(start);
          input = v.bytes;
          expectMessages = v.messages;
        }
        const cut = r.below(input.length + 1);
        let got = 0;
        try {
          feedCut(d, input, cut, (m) => {
            got++;
            outcomes.messages++;
            if (m.type === 'optionReply') {
              outcomes.optionReplies++;
              // What the client handshake does with the reply's data (these parsers throw on malformed data).
              if (m.replyType === C.NBD_REP_INFO) codec.parseInfoReply(m.data);
              else if (m.replyType === C.NBD_REP_SERVER) codec.parseRepServer(m.data);
              else if (m.replyType === C.NBD_REP_META_CONTEXT) codec.parseRepMetaContext(m.data);
            } else if (m.type === 'simpleReply') {
              outcomes.simpleReplies++;
              const want = m.error === 0 ? simpleReplyLength(m.cookie) : 0;
              if ((m.data?.length ?? 0) !== want) throw new Error(`simple reply with ${m.data?.length ?? 0} data bytes, expected ${want}`);
            } else if (m.type === 'chunk') {
              outcomes.chunks++;
            } else if (m.type === 'exportNameReply') {
              d.enterTransmission(true);
            }
          });
          outcomes.clean++;
        } catch (e) {
          if (expectMessages >= 0) throw new Error(`valid stream #${n} was refused (${replayHint(FC_SEED)}): ${String(e)}\ninput: ${hexOf(input)}`);
          outcomes.errors++;
          checkError(e, 'ClientDecoder', n, input, codes);
        }
        expectMessageCount(n, input, got, expectMessages);
      }
    } finally {
      Error.stackTraceLimit = stackLimit;
    }
    reportRun('nbd client-decoder', started, kinds, outcomes, codes);
    if (INPUTS >= 10_000) {
      expect(outcomes.chunks).toBeGreaterThan(INPUTS / 50);
      expect(outcomes.simpleReplies).toBeGreaterThan(INPUTS / 50);
      expect(outcomes.optionReplies).toBeGreaterThan(INPUTS / 50);
      expect(outcomes.errors).toBeGreaterThan(INPUTS / 10);
      for (const code of ['NBD_ERR_BAD_MAGIC', 'NBD_ERR_TOO_LARGE', 'NBD_ERR_MALFORMED', 'NBD_ERR_UNKNOWN_COOKIE']) expect(codes[code], code).toBeGreaterThan(0);
    }
  }, 300_000);
});
