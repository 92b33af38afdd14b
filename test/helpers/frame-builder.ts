// Test-only builder of migration-wire frame bytes, written from the header layout in DESIGN §3 /
// constants.ts with plain Buffer writes and node:zlib's crc32, never with the encoder under test; plus
// annotated hex golden vectors (STYLE 10) and the messages they stand for.
import { crc32 } from 'node:zlib';
import type { Message } from '../../src/protocol/messages.js';

/** Annotated hex: '#' starts a comment, whitespace is ignored, `${…}` interpolates hex digits. */
export function hex(strings: TemplateStringsArray, ...values: unknown[]): Buffer {
  const text = strings.reduce((acc, s, i) => acc + s + (i < values.length ? String(values[i]) : ''), '');
  const digits = text
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join('')
    .replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`bad hex vector: ${digits}`);
  return Buffer.from(digits, 'hex');
}

/** Text as hex digits, for JSON and strings inside vectors. */
export function ascii(text: string): string {
  return Buffer.from(text, 'utf8').toString('hex');
}

/** Wire type numbers, spelled out here independently of constants.ts (the vectors check both agree). */
export const T = {
  HELLO: 1,
  CHALLENGE: 2,
  AUTH: 3,
  WELCOME: 4,
  BEGIN: 5,
  PREPARED: 6,
  RAM_ROUND_END: 7,
  DEVICE_STATE: 8,
  FINISH_RESULT: 9,
  ABORT: 10,
  COMPLETE: 11,
  CONFIRM: 12,
  ERROR: 13,
  PING: 14,
  PONG: 15,
  EXTENTS_END: 16,
  CREDIT: 17,
  GUEST_STREAM_END: 18,
  DIGEST_MISMATCH: 19,
  EXTENTS: 64,
  RAM_PAGES: 65,
  BLOCK_REQ: 66,
  BLOCK_DATA: 67,
  BLOCK_ZERO: 68,
  BLOCK_ERR: 69,
  GUEST_STREAM: 70,
  BLOCK_DIGESTS: 71,
} as const;

export const HEADER_BYTES = 20;
export const F_URGENT = 0x01;
export const F_DONE = 0x02;

export interface RawFrame {
  type: number;
  flags?: number;
  id?: number;
  payload?: Buffer;
  /** Overrides for malformed frames; by default each is the correct value. */
  magic?: Buffer | number;
  reserved?: number;
  length?: number;
  crc?: number;
}

/** Header (magic "PCY1" · type u8 · flags u8 · reserved u16 · id u32 · length u32 · crc32 u32) + payload. */
export function buildFrame(f: RawFrame): Buffer {
  const payload = f.payload ?? Buffer.alloc(0);
  const h = Buffer.alloc(HEADER_BYTES);
  if (f.magic === undefined) h.write('PCY1', 0, 'latin1');
  else if (typeof f.magic === 'number') h.writeUInt32BE(f.magic, 0);
  else f.magic.copy(h, 0, 0, 4);
  h[4] = f.type;
  h[5] = f.flags ?? 0;
  h.writeUInt16BE(f.reserved ?? 0, 6);
  h.writeUInt32BE((f.id ?? 0) >>> 0, 8);
  h.writeUInt32BE(f.length ?? payload.length, 12);
  h.writeUInt32BE((f.crc ?? crc32(payload)) >>> 0, 16);
  return Buffer.concat([h, payload]);
}

/** Just a header (for length-cap tests where the payload must never be sent). */
export function buildHeader(f: RawFrame & { length: number }): Buffer {
  return buildFrame({ ...f, payload: Buffer.alloc(0), crc: f.crc ?? 0 }).subarray(0, HEADER_BYTES);
}

/** Control frame: the JSON text of `body` as its payload (urgent flag, id 0, as the encoder sends them). */
export function buildControl(type: number, body: unknown, flags = F_URGENT): Buffer {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return buildFrame({ type, flags, payload: Buffer.from(text, 'utf8') });
}

export function u8(v: number): Buffer {
  return Buffer.from([v & 0xff]);
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}
export function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v), 0);
  return b;
}

/** BLOCK_REQ payload: u64 offset · u32 length · u8 class. */
export function blockReqPayload(offset: number | bigint, length: number, cls: number): Buffer {
  return Buffer.concat([u64(offset), u32(length), u8(cls)]);
}
/** BLOCK_ZERO payload: u64 offset · u32 length. */
export function blockZeroPayload(offset: number | bigint, length: number): Buffer {
  return Buffer.concat([u64(offset), u32(length)]);
}
/** EXTENTS payload: n × (u64 offset · u64 length). */
export function extentsPayload(runs: ReadonlyArray<readonly [number | bigint, number | bigint]>): Buffer {
  return Buffer.concat(runs.flatMap(([o, l]) => [u64(o), u64(l)]));
}
/** RAM_PAGES payload: u32 count · count × u32 index · page bytes. */
export function ramPagesPayload(indices: readonly number[], data: Buffer): Buffer {
  return Buffer.concat([u32(indices.length), ...indices.map(u32), data]);
}

export interface GoldenVector {
  name: string;
  /** The frame as annotated hex. */
  bytes: Buffer;
  /** The same frame from buildFrame (a second independent spelling; a test checks they agree). */
  built: Buffer;
  /** What decodeMessage must return for it, and what encodeMessage must turn into `bytes`. */
  message: Message;
}

const PAGE = Buffer.alloc(4096, 0x5a);

export const GOLDEN: readonly GoldenVector[] = [
  {
    name: 'PING',
    bytes: hex`
      50435931          # magic "PCY1"
      0e                # type 14 PING
      01                # flags: URGENT (control frames are sent urgent)
      0000              # reserved
      00000000          # id 0 (control frames carry none)
      00000009          # payload length 9
      f3d31beb          # crc32 of the payload
      ${ascii('{"seq":7}')}  # JSON {"seq":7}
    `,
    built: buildControl(T.PING, { seq: 7 }),
    message: { type: 'PING', seq: 7 },
  },
  {
    name: 'HELLO',
    bytes: hex`
      50435931          # magic
      01                # type 1 HELLO
      01                # flags: URGENT
      0000              # reserved
      00000000          # id 0
      0000006c          # payload length 108
      3560ca60          # crc32
      ${ascii('{"versions":[1,1],')}                              # versions 1..1
      ${ascii('"caps":["zero-extents","ram-precopy","resume"],')} # capabilities
      ${ascii('"nonce":"00112233445566778899aabbccddeeff"}')}     # S's nonce (hex)
    `,
    built: buildControl(T.HELLO, {
      versions: [1, 1],
      caps: ['zero-extents', 'ram-precopy', 'resume'],
      nonce: '00112233445566778899aabbccddeeff',
    }),
    message: { type: 'HELLO', versions: [1, 1], caps: ['zero-extents', 'ram-precopy', 'resume'], nonce: '00112233445566778899aabbccddeeff' },
  },
  {
    name: 'CONFIRM (empty JSON object)',
    bytes: hex`
      50435931 0c 01 0000   # magic · type 12 CONFIRM · URGENT · reserved
      00000000              # id 0
      00000002              # length 2
      a3a6bf43              # crc32
      7b7d                  # "{}"
    `,
    built: buildControl(T.CONFIRM, {}),
    message: { type: 'CONFIRM' },
  },
  {
    name: 'BLOCK_REQ',
    bytes: hex`
      50435931          # magic
      42                # type 66 BLOCK_REQ
      01                # flags: URGENT (class urgent)
      0000              # reserved
      0000002a          # id 42
      0000000d          # payload length 13
      cb7310cc          # crc32
      0000000000100000  # offset 1 MiB
      00010000          # length 64 KiB
      00                # class 0 urgent
    `,
    built: buildFrame({ type: T.BLOCK_REQ, flags: F_URGENT, id: 42, payload: blockReqPayload(0x100000, 0x10000, 0) }),
    message: { type: 'BLOCK_REQ', id: 42, offset: 0x100000, length: 0x10000, cls: 0 },
  },
  {
    name: 'BLOCK_DATA with FLAG_DONE',
    bytes: hex`
      50435931          # magic
      43                # type 67 BLOCK_DATA
      02                # flags: DONE (last part), not urgent
      0000              # reserved
      00000005          # id 5
      00000010          # payload length 16
      d0ee71b6          # crc32
      0000000000002000  # offset 8 KiB
      deadbeefcafef00d  # data (8 bytes)
    `,
    built: buildFrame({
      type: T.BLOCK_DATA,
      flags: F_DONE,
      id: 5,
      payload: Buffer.concat([u64(0x2000), Buffer.from('deadbeefcafef00d', 'hex')]),
    }),
    message: { type: 'BLOCK_DATA', id: 5, offset: 0x2000, data: Buffer.from('deadbeefcafef00d', 'hex'), done: true, urgent: false },
  },
  {
    name: 'BLOCK_ZERO',
    bytes: hex`
      50435931          # magic
      44                # type 68 BLOCK_ZERO
      03                # flags: URGENT | DONE
      0000              # reserved
      00000006          # id 6
      0000000c          # payload length 12
      dc60a7ec          # crc32
      0000000000010000  # offset 64 KiB
      00010000          # length 64 KiB reads as zeroes
    `,
    built: buildFrame({ type: T.BLOCK_ZERO, flags: F_URGENT | F_DONE, id: 6, payload: blockZeroPayload(0x10000, 0x10000) }),
    message: { type: 'BLOCK_ZERO', id: 6, offset: 0x10000, length: 0x10000, done: true, urgent: true },
  },
  {
    name: 'RAM_PAGES with a zero page',
    bytes: hex`
      50435931          # magic
      41                # type 65 RAM_PAGES
      00                # flags: none (bulk)
      0000              # reserved
      00000000          # id 0
      0000100c          # payload length 12 + 4096
      fc0934db          # crc32
      00000002          # 2 indices
      00000003          # page 3 (carries data)
      80000005          # page 5 with bit 31: zero page, no data
      ${'5a'.repeat(4096)}  # page 3's 4096 bytes, all 0x5a
    `,
    built: buildFrame({ type: T.RAM_PAGES, payload: ramPagesPayload([3, 0x80000005], PAGE) }),
    message: { type: 'RAM_PAGES', indices: [3, 0x80000005], data: PAGE },
  },
  {
    name: 'EXTENTS',
    bytes: hex`
      50435931          # magic
      40                # type 64 EXTENTS
      00                # flags: none
      0000              # reserved
      00000000          # id 0
      00000020          # payload length 32 (2 runs)
      02669fb7          # crc32
      0000000000000000 0000000000100000  # run 1: offset 0, length 1 MiB
      0000000040000000 0000000000200000  # run 2: offset 1 GiB, length 2 MiB
    `,
    built: buildFrame({ type: T.EXTENTS, payload: extentsPayload([[0, 0x100000], [0x40000000, 0x200000]]) }),
    message: { type: 'EXTENTS', runs: [{ offset: 0, length: 0x100000 }, { offset: 0x40000000, length: 0x200000 }] },
  },
  {
    name: 'BLOCK_ERR',
    bytes: hex`
      50435931 45 01 0000  # magic · type 69 BLOCK_ERR · URGENT · reserved
      00000009             # id 9
      00000014             # payload length 20
      4f2207e1             # crc32
      00000005             # errno 5 (EIO)
      ${ascii('EIO: read failed')}  # utf-8 message
    `,
    built: buildFrame({ type: T.BLOCK_ERR, flags: F_URGENT, id: 9, payload: Buffer.concat([u32(5), Buffer.from('EIO: read failed')]) }),
    message: { type: 'BLOCK_ERR', id: 9, errno: 5, message: 'EIO: read failed' },
  },
  {
    name: 'GUEST_STREAM',
    bytes: hex`
      50435931          # magic
      46                # type 70 GUEST_STREAM
      00                # flags: none (bulk)
      0000              # reserved
      00000000          # id 0
      00000008          # payload length 8
      09205047          # crc32
      5145564d 00000003 # the hypervisor's bytes, as they are (here QEMU's "QEVM" magic, version 3)
    `,
    built: buildFrame({ type: T.GUEST_STREAM, payload: Buffer.from('5145564d00000003', 'hex') }),
    message: { type: 'GUEST_STREAM', data: Buffer.from('5145564d00000003', 'hex') },
  },
  {
    name: 'HELLO resuming, with a ticket id',
    bytes: hex`
      50435931 01 01 0000   # magic · type 1 HELLO · URGENT · reserved
      00000000              # id 0
      00000092              # payload length 146
      3bb1f427              # crc32
      ${ascii('{"versions":[1,1],"caps":["resume"],')}                 # versions 1..1, capabilities
      ${ascii('"nonce":"00112233445566778899aabbccddeeff",')}          # S's nonce (hex)
      ${ascii('"resumeSession":"s1",')}                                # the session to resume
      ${ascii('"ticketId":"0123456789abcdef0123456789abcdef"}')}       # the ticket's id: 16 bytes in hex
    `,
    built: buildControl(T.HELLO, {
      versions: [1, 1],
      caps: ['resume'],
      nonce: '00112233445566778899aabbccddeeff',
      resumeSession: 's1',
      ticketId: '0123456789abcdef0123456789abcdef',
    }),
    message: {
      type: 'HELLO',
      versions: [1, 1],
      caps: ['resume'],
      nonce: '00112233445566778899aabbccddeeff',
      resumeSession: 's1',
      ticketId: '0123456789abcdef0123456789abcdef',
    },
  },
];

/** Recompute the header's length and crc fields after a payload mutation, so decodeMessage's checks are reached. */
export function refreshHeader(frame: Buffer): Buffer {
  const payload = frame.subarray(HEADER_BYTES);
  frame.writeUInt32BE(payload.length, 12);
  frame.writeUInt32BE(crc32(payload) >>> 0, 16);
  return frame;
}
