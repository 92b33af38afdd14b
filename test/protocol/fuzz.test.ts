// Fuzz FrameDecoder + decodeMessage: pure random bytes, random payloads under valid headers, byte-mutated
// valid frames (length and checksum usually recomputed, so decodeMessage's validation is reached) and
// field-mutated control JSON. Each input is refused with one of the decoders' ProtocolError codes, or decodes to
// valid messages (of the frame's type, re-encodable, decoding back to themselves).
// Normal runs push 200,000 inputs (~3-4 s); the soak pushes a million (~15-19 s on one core):
//   FUZZ_INPUTS=1000000 npx vitest run test/protocol/fuzz.test.ts
// Replay a failure with the FC_SEED (and FUZZ_INPUTS) it prints.
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { ProtocolError } from '../../src/common/errors.js';
import { nameOfMsg } from '../../src/protocol/constants.js';
import { FrameDecoder } from '../../src/protocol/frame-codec.js';
import { decodeMessage } from '../../src/protocol/messages.js';
import { FC_SEED, replayHint } from '../helpers/fc.js';
import { sfc32 } from '../helpers/sfc32.js';
import { GOLDEN, HEADER_BYTES, T, buildFrame, refreshHeader } from '../helpers/frame-builder.js';
import { anyMessage, controlMessage } from '../helpers/message-arbitraries.js';
import { encodeBytes, messagesOf, showMessage } from '../helpers/wire.js';

/** Inputs per run: FUZZ_INPUTS, else 200,000 (a million takes ~4x the whole rest of the protocol suite). */
const INPUTS = process.env.FUZZ_INPUTS ? Number(process.env.FUZZ_INPUTS) : 200_000;
if (!Number.isSafeInteger(INPUTS) || INPUTS < 1) throw new Error(`FUZZ_INPUTS must be a positive integer, got ${process.env.FUZZ_INPUTS}`);


const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x30, 0x2d];
const INTERESTING_JSON: unknown[] = [
  -1, 0, 1.5, 2 ** 32, 2 ** 32 - 1, 2 ** 53, 2 ** 53 - 1, -0, 1e308, '', 'zz', 'ABCD', 'abc', 'ab'.repeat(40), 'x'.repeat(4097),
  null, true, false, [], [1], [1, 1, 1], ['a', 1], {}, { a: 1 }, { persistent: {}, transient: {} }, { persistent: [], transient: {} },
  Array.from({ length: 257 }, () => 'c'),
];
const knownTypes = Object.values(T);
/** The codes FrameDecoder and decodeMessage refuse input with; any other code is a bug even on a ProtocolError. */
const REFUSAL_CODES = new Set(['PC_ERR_BAD_MAGIC', 'PC_ERR_UNKNOWN_TYPE', 'PC_ERR_MALFORMED', 'PC_ERR_FRAME_TOO_LARGE', 'PC_ERR_CHECKSUM']);

it(`${INPUTS} fuzz inputs through FrameDecoder + decodeMessage are refused with a decoder's ProtocolError or decode to valid messages`, () => {
  // Corpus: the golden vectors plus encodings of random messages of every type (sampled from the seed).
  // Sampled frames over 1 KiB are left out: copying and checksumming them would cost more than the parsing under test.
  const corpus: Buffer[] = [
    ...GOLDEN.map((v) => v.bytes),
    ...fc
      .sample(anyMessage, { seed: FC_SEED, numRuns: 400 })
      .map(encodeBytes)
      .filter((b) => b.length <= 1024),
  ];
  const controls = fc
    .sample(controlMessage, { seed: FC_SEED ^ 0x5a5a, numRuns: 200 })
    .filter((m) => JSON.stringify(m).length <= 1024)
    .map((m) => {
      const { type, ...body } = m as Record<string, unknown> & { type: string };
      return { type: T[type as keyof typeof T], body };
    });

  const rnd = sfc32(FC_SEED);
  const below = (n: number) => (n <= 0 ? 0 : rnd() % n);
  const randomBytes = (n: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = rnd() & 0xff;
    return b;
  };

  const kinds = { random: 0, header: 0, mutated: 0, json: 0 };
  const outcomes = { frames: 0, messages: 0, protocolErrors: 0 };
  // Nearly every input ends in a thrown error; capturing a stack for each would be most of the cost.
  const stackLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const started = performance.now();
  try {

  for (let n = 0; n < INPUTS; n++) {
    let input: Buffer;
    const kind = below(8);
    if (kind === 0) {
      // Pure random bytes (an occasional valid magic in front).
      kinds.random++;
      input = randomBytes(below(48));
      if (input.length >= 4 && below(2) === 0) input.write('PCY1', 0, 'latin1');
    } else if (kind <= 2) {
      // A valid header of a random type over a random payload: decodeMessage sees raw garbage.
      kinds.header++;
      input = buildFrame({ type: knownTypes[below(knownTypes.length)]!, flags: rnd() & 0xff, id: rnd(), payload: randomBytes(below(64)) });
    } else if (kind <= 6) {
      // A valid frame, mutated: set/flip/insert/delete bytes, truncate, or extend; header usually fixed up.
      kinds.mutated++;
      const base = corpus[below(corpus.length)]!;
      let b = Buffer.from(base);
      const edits = 1 + below(4);
      for (let e = 0; e < edits; e++) {
        const at = below(b.length);
        switch (below(6)) {
          case 0: b[at] = rnd() & 0xff; break;
          case 1: b[at]! ^= 1 << below(8); break;
          case 2: b[at] = INTERESTING_BYTES[below(INTERESTING_BYTES.length)]!; break;
          case 3: b = Buffer.concat([b.subarray(0, at), Buffer.from([rnd() & 0xff]), b.subarray(at)]); break;
          case 4: b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]); break;
          default: b = below(2) === 0 ? b.subarray(0, Math.max(HEADER_BYTES, at)) : Buffer.concat([b, randomBytes(1 + below(16))]);
        }
      }
      if (b.length >= HEADER_BYTES && below(5) !== 0) {
        // Keep the frame well formed so the payload checks, not the checksum, are exercised.
        b.write('PCY1', 0, 'latin1');
        b.writeUInt16BE(0, 6);
        refreshHeader(b);
      }
      input = b;
    } else {
      // A valid control body with one field replaced by an interesting JSON value (or removed).
      kinds.json++;
      const c = controls[below(controls.length)]!;
      const body: Record<string, unknown> = { ...c.body };
      const keys = Object.keys(body);
      const value = INTERESTING_JSON[below(INTERESTING_JSON.length)];
      if (keys.length === 0 || below(6) === 0) body[`k${below(4)}`] = value;
      else if (below(5) === 0) delete body[keys[below(keys.length)]!];
      else body[keys[below(keys.length)]!] = value;
      input = buildFrame({ type: c.type, payload: Buffer.from(JSON.stringify(body)) });
    }

    const decoder = new FrameDecoder();
    const cut = below(input.length + 1);
    try {
      const frames = cut === 0 ? decoder.push(input) : [...decoder.push(input.subarray(0, cut)), ...decoder.push(input.subarray(cut))];
      outcomes.frames += frames.length;
      for (const f of frames) {
        const m = decodeMessage(f);
        outcomes.messages++;
        // What decodes must be a valid message: of the frame's type, one the encoder takes, decoding back to itself.
        const again = messagesOf([encodeBytes(m)]);
        if (m.type !== nameOfMsg(f.type) || again.length !== 1 || JSON.stringify(showMessage(again[0]!)) !== JSON.stringify(showMessage(m))) {
          expect.fail(`input #${n} (${replayHint(FC_SEED)} FUZZ_INPUTS=${n + 1}) decoded to an invalid ${m.type}\ninput: ${input.toString('hex').slice(0, 2000)}`);
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError && !REFUSAL_CODES.has(e.code)) {
        expect.fail(`input #${n} (${replayHint(FC_SEED)} FUZZ_INPUTS=${n + 1}) refused with ${e.code}, not a decoder's code\ninput: ${input.toString('hex').slice(0, 2000)}`);
      }
      if (!(e instanceof ProtocolError)) {
        expect.fail(
          `input #${n} (${replayHint(FC_SEED)} FUZZ_INPUTS=${n + 1}) raised ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}` +
            `\ninput: ${input.toString('hex').slice(0, 2000)}`,
        );
      }
      outcomes.protocolErrors++;
    }
  }

  } finally {
    Error.stackTraceLimit = stackLimit;
  }
  const ms = performance.now() - started;
  console.log(
    `fuzz: ${INPUTS} inputs in ${ms.toFixed(0)} ms (${((INPUTS / ms) * 1000).toFixed(0)}/s), ${replayHint(FC_SEED)}; ` +
      `kinds ${JSON.stringify(kinds)}; outcomes ${JSON.stringify(outcomes)}`,
  );
  expect(kinds.random + kinds.header + kinds.mutated + kinds.json).toBe(INPUTS);
  // The mix must reach decodeMessage both ways: some inputs decode to messages, many are refused.
  if (INPUTS >= 10_000) {
    expect(outcomes.messages).toBeGreaterThan(INPUTS / 100);
    expect(outcomes.protocolErrors).toBeGreaterThan(INPUTS / 2);
  }
}, 120_000);
