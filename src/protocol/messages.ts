// Typed messages of the migration wire: encode a message to a frame, decode and validate a frame to a message.
import { ProtocolError } from '../common/errors.js';
import {
  BLOCK_REQ_PAYLOAD,
  CLASS_BULK,
  CLASS_URGENT,
  FLAG_DONE,
  FLAG_URGENT,
  MAX_BLOCK_REQ_BYTES,
  MAX_DIGESTS_PER_FRAME,
  MAX_EXTENTS_PER_FRAME,
  MAX_MISMATCH_BLOCKS,
  MSG,
  RAM_PAGE_SIZE,
  RAM_ZERO_PAGE_BIT,
  isControlMsg,
  nameOfMsg,
  type MsgName,
} from './constants.js';
import { encodeFrame, encodeHeader, type Frame } from './frame-codec.js';
import type { ImageIdentity } from '../common/image-identity.js';

export type BlockClass = typeof CLASS_URGENT | typeof CLASS_BULK;

export interface GuestDefinition {
  /** The definition kept on the host that runs the guest (what a hypervisor would store). */
  persistent: Record<string, unknown>;
  /** The running instance's definition (devices as they are now). */
  transient: Record<string, unknown>;
}

export type ControlMessage =
  | { type: 'HELLO'; versions: [number, number]; caps: string[]; nonce: string; resumeSession?: string }
  | { type: 'CHALLENGE'; version: number; caps: string[]; nonce: string; proof: string }
  | { type: 'AUTH'; proof: string }
  | { type: 'WELCOME'; sessionId: string; resumed: boolean; phase: string }
  /** image: S's image file (host, device, inode) so D can refuse to overwrite it; null for an NBD backend. */
  | { type: 'BEGIN'; guest: GuestDefinition | null; size: number; blockSize: number; cookie: string; image?: ImageIdentity | null }
  | { type: 'PREPARED'; cookie: string }
  | { type: 'RAM_ROUND_END'; round: number; pagesSent: number; dirtyRemaining: number }
  | { type: 'DEVICE_STATE'; state: Record<string, unknown>; ramDigest: string }
  | { type: 'FINISH_RESULT'; running: boolean; error?: string }
  /** code: the error code of a refusal the operator must act on (an ERROR_CODES key), so S reports it as such. */
  | { type: 'ABORT'; reason: string; code?: string }
  /** pristineBlocks: how many BLOCK_DIGESTS entries preceded it (S checks it has them all). */
  | { type: 'COMPLETE'; blocks: number; pristineBlocks: number }
  | { type: 'DIGEST_MISMATCH'; blocks: number[] }
  | { type: 'CONFIRM' }
  | { type: 'ERROR'; code: string; message: string }
  | { type: 'PING'; seq: number }
  | { type: 'PONG'; seq: number }
  | { type: 'EXTENTS_END'; count: number }
  | { type: 'CREDIT'; bytes: number }
  | { type: 'GUEST_STREAM_END' };

export interface ZeroRun {
  offset: number;
  length: number;
}

export type DataMessage =
  | { type: 'EXTENTS'; runs: ZeroRun[] }
  /** indices: page numbers, bit 31 set for an all-zero page that carries no data; data: the other pages in order. */
  | { type: 'RAM_PAGES'; indices: number[]; data: Buffer }
  | { type: 'BLOCK_REQ'; id: number; offset: number; length: number; cls: BlockClass }
  | { type: 'BLOCK_DATA'; id: number; offset: number; data: Buffer; done: boolean; urgent: boolean }
  | { type: 'BLOCK_ZERO'; id: number; offset: number; length: number; done: boolean; urgent: boolean }
  | { type: 'BLOCK_ERR'; id: number; errno: number; message: string }
  | { type: 'GUEST_STREAM'; data: Buffer }
  /** Blocks (index, crc32 of D's bytes, as written or read back) for the final check against S's image. */
  | { type: 'BLOCK_DIGESTS'; entries: Array<[number, number]> };

export type Message = ControlMessage | DataMessage;
export type MessageOf<T extends Message['type']> = Extract<Message, { type: T }>;

/** Encode any message as [header, payload] (payload may be a zero-copy view of the caller's data). */
export function encodeMessage(msg: Message): Buffer[] {
  const type = MSG[msg.type as MsgName];
  switch (msg.type) {
    case 'EXTENTS': {
      const p = Buffer.allocUnsafe(msg.runs.length * 16);
      msg.runs.forEach((r, i) => {
        p.writeBigUInt64BE(BigInt(r.offset), i * 16);
        p.writeBigUInt64BE(BigInt(r.length), i * 16 + 8);
      });
      return encodeFrame(type, 0, p);
    }
    case 'RAM_PAGES': {
      const head = Buffer.allocUnsafe(4 + msg.indices.length * 4);
      head.writeUInt32BE(msg.indices.length, 0);
      msg.indices.forEach((ix, i) => head.writeUInt32BE(ix >>> 0, 4 + i * 4));
      return encodeFrame(type, 0, Buffer.concat([head, msg.data]));
    }
    case 'BLOCK_REQ': {
      const p = Buffer.allocUnsafe(BLOCK_REQ_PAYLOAD);
      p.writeBigUInt64BE(BigInt(msg.offset), 0);
      p.writeUInt32BE(msg.length, 8);
      p.writeUInt8(msg.cls, 12);
      return encodeFrame(type, msg.id, p, msg.cls === CLASS_URGENT ? FLAG_URGENT : 0);
    }
    case 'BLOCK_DATA': {
      return encodeBlockData(msg.id, msg.offset, msg.data, msg.done, msg.urgent);
    }
    case 'BLOCK_ZERO': {
      const p = Buffer.allocUnsafe(12);
      p.writeBigUInt64BE(BigInt(msg.offset), 0);
      p.writeUInt32BE(msg.length, 8);
      return encodeFrame(type, msg.id, p, (msg.done ? FLAG_DONE : 0) | (msg.urgent ? FLAG_URGENT : 0));
    }
    case 'GUEST_STREAM':
      return encodeFrame(type, 0, msg.data);
    case 'BLOCK_DIGESTS': {
      const p = Buffer.allocUnsafe(msg.entries.length * 8);
      msg.entries.forEach(([block, crc], i) => {
        p.writeUInt32BE(block, i * 8);
        p.writeUInt32BE(crc >>> 0, i * 8 + 4);
      });
      return encodeFrame(type, 0, p);
    }
    case 'BLOCK_ERR': {
      const m = Buffer.from(msg.message.slice(0, 512), 'utf8');
      const p = Buffer.allocUnsafe(4 + m.length);
      p.writeUInt32BE(msg.errno, 0);
      m.copy(p, 4);
      return encodeFrame(type, msg.id, p, FLAG_URGENT);
    }
    case 'ERROR':
      return encodeControl(type, { code: clip(msg.code), message: clip(msg.message) });
    case 'ABORT':
      return encodeControl(type, msg.code === undefined ? { reason: clip(msg.reason) } : { reason: clip(msg.reason), code: clip(msg.code) });
    case 'FINISH_RESULT':
      return encodeControl(type, msg.error === undefined ? { running: msg.running } : { running: msg.running, error: clip(msg.error) });
    default: {
      const { type: _t, ...body } = msg;
      return encodeControl(type, body);
    }
  }
}

function encodeControl(type: number, body: object): Buffer[] {
  return encodeFrame(type, 0, Buffer.from(JSON.stringify(body), 'utf8'), FLAG_URGENT);
}

/** Free text (error messages, reasons) is cut to the field cap the decoder enforces, so it always arrives. */
function clip(text: string): string {
  return text.length > MAX_STRING ? `${text.slice(0, MAX_STRING - 1)}…` : text;
}

/**
 * BLOCK_DATA is the hot path: the payload is an 8-byte offset prefix plus the caller's data,
 * returned as separate buffers so the data is never copied before the socket's writev.
 */
export function encodeBlockData(id: number, offset: number, data: Buffer, done: boolean, urgent: boolean): Buffer[] {
  const prefix = Buffer.allocUnsafe(8);
  prefix.writeBigUInt64BE(BigInt(offset), 0);
  const flags = (done ? FLAG_DONE : 0) | (urgent ? FLAG_URGENT : 0);
  return [encodeHeader(MSG.BLOCK_DATA, id, [prefix, data], flags), prefix, data];
}

/** Decode and validate one frame. Anything malformed raises ProtocolError (the connection must close). */
export function decodeMessage(frame: Frame): Message {
  const { type, payload: p, id, flags } = frame;
  const name = nameOfMsg(type) as MsgName;
  if (isControlMsg(type)) return decodeControl(name, p);
  switch (name) {
    case 'EXTENTS': {
      if (p.length % 16 !== 0 || p.length / 16 > MAX_EXTENTS_PER_FRAME) malformed(name, 'length');
      const runs: ZeroRun[] = [];
      for (let o = 0; o < p.length; o += 16) {
        runs.push({ offset: safeU64(p, o, name), length: safeU64(p, o + 8, name) });
      }
      return { type: 'EXTENTS', runs };
    }
    case 'RAM_PAGES': {
      if (p.length < 4) malformed(name, 'short');
      const n = p.readUInt32BE(0);
      if (4 + n * 4 > p.length) malformed(name, 'index list past the end');
      const indices: number[] = new Array(n);
      let dataPages = 0;
      for (let i = 0; i < n; i++) {
        const ix = p.readUInt32BE(4 + i * 4);
        indices[i] = ix;
        if ((ix & RAM_ZERO_PAGE_BIT) === 0) dataPages++;
      }
      const data = p.subarray(4 + n * 4);
      if (data.length !== dataPages * RAM_PAGE_SIZE) malformed(name, 'page data length');
      return { type: 'RAM_PAGES', indices, data };
    }
    case 'BLOCK_REQ': {
      if (p.length !== BLOCK_REQ_PAYLOAD) malformed(name, 'length');
      const length = p.readUInt32BE(8);
      const cls = p.readUInt8(12);
      if (cls !== CLASS_URGENT && cls !== CLASS_BULK) malformed(name, `class ${cls}`);
      if (length === 0 || length > MAX_BLOCK_REQ_BYTES) malformed(name, `length ${length}`);
      return { type: 'BLOCK_REQ', id, offset: safeU64(p, 0, name), length, cls: cls as BlockClass };
    }
    case 'BLOCK_DATA': {
      if (p.length < 9) malformed(name, 'short');
      return {
        type: 'BLOCK_DATA',
        id,
        offset: safeU64(p, 0, name),
        data: p.subarray(8),
        done: (flags & FLAG_DONE) !== 0,
        urgent: (flags & FLAG_URGENT) !== 0,
      };
    }
    case 'BLOCK_ZERO': {
      if (p.length !== 12) malformed(name, 'length');
      const length = p.readUInt32BE(8);
      if (length === 0) malformed(name, 'zero length');
      return {
        type: 'BLOCK_ZERO',
        id,
        offset: safeU64(p, 0, name),
        length,
        done: (flags & FLAG_DONE) !== 0,
        urgent: (flags & FLAG_URGENT) !== 0,
      };
    }
    case 'BLOCK_DIGESTS': {
      if (p.length % 8 !== 0 || p.length / 8 > MAX_DIGESTS_PER_FRAME) malformed(name, 'length');
      const entries: Array<[number, number]> = [];
      for (let o = 0; o < p.length; o += 8) entries.push([p.readUInt32BE(o), p.readUInt32BE(o + 4)]);
      return { type: 'BLOCK_DIGESTS', entries };
    }
    case 'GUEST_STREAM':
      if (p.length === 0) malformed(name, 'empty');
      return { type: 'GUEST_STREAM', data: p };
    case 'BLOCK_ERR': {
      if (p.length < 4) malformed(name, 'short');
      return { type: 'BLOCK_ERR', id, errno: p.readUInt32BE(0), message: p.subarray(4).toString('utf8') };
    }
    default:
      throw new ProtocolError('PC_ERR_UNKNOWN_TYPE', String(type));
  }
}

function decodeControl(name: MsgName, p: Buffer): ControlMessage {
  let body: unknown;
  try {
    body = p.length === 0 ? {} : JSON.parse(p.toString('utf8'));
  } catch (e) {
    throw new ProtocolError('PC_ERR_MALFORMED', `${name}: not JSON`, { cause: e });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) malformed(name, 'not an object');
  const b = new Fields(name, body as Record<string, unknown>);
  switch (name) {
    case 'HELLO': {
      const versions = b.array('versions');
      if (versions.length !== 2 || !versions.every(isU32)) malformed(name, 'versions');
      const resume = b.optString('resumeSession');
      return {
        type: 'HELLO',
        versions: [versions[0] as number, versions[1] as number],
        caps: b.stringArray('caps'),
        nonce: b.hex('nonce'),
        ...(resume !== undefined ? { resumeSession: resume } : {}),
      };
    }
    case 'CHALLENGE':
      return { type: 'CHALLENGE', version: b.u32('version'), caps: b.stringArray('caps'), nonce: b.hex('nonce'), proof: b.hex('proof') };
    case 'AUTH':
      return { type: 'AUTH', proof: b.hex('proof') };
    case 'WELCOME':
      return { type: 'WELCOME', sessionId: b.string('sessionId'), resumed: b.bool('resumed'), phase: b.string('phase') };
    case 'BEGIN': {
      const g = b.raw('guest');
      let guest: GuestDefinition | null = null;
      if (g !== null) {
        if (!isPlainObject(g) || !isPlainObject(g.persistent) || !isPlainObject(g.transient)) malformed(name, 'guest');
        guest = g as unknown as GuestDefinition;
      }
      const image = 'image' in b.body ? beginImage(b.raw('image')) : undefined;
      return { type: 'BEGIN', guest, size: b.u64('size'), blockSize: b.u32('blockSize'), cookie: b.string('cookie'), ...(image !== undefined ? { image } : {}) };
    }
    case 'PREPARED':
      return { type: 'PREPARED', cookie: b.string('cookie') };
    case 'RAM_ROUND_END':
      return { type: 'RAM_ROUND_END', round: b.u32('round'), pagesSent: b.u64('pagesSent'), dirtyRemaining: b.u64('dirtyRemaining') };
    case 'DEVICE_STATE': {
      const state = b.raw('state');
      if (!isPlainObject(state)) malformed(name, 'state');
      return { type: 'DEVICE_STATE', state: state as Record<string, unknown>, ramDigest: b.hex('ramDigest') };
    }
    case 'FINISH_RESULT': {
      const error = b.optString('error');
      return { type: 'FINISH_RESULT', running: b.bool('running'), ...(error !== undefined ? { error } : {}) };
    }
    case 'ABORT': {
      const code = b.optString('code');
      return { type: 'ABORT', reason: b.string('reason'), ...(code !== undefined ? { code } : {}) };
    }
    case 'COMPLETE':
      return { type: 'COMPLETE', blocks: b.u64('blocks'), pristineBlocks: b.u64('pristineBlocks') };
    case 'DIGEST_MISMATCH': {
      const blocks = b.raw('blocks');
      if (!Array.isArray(blocks) || blocks.length > MAX_MISMATCH_BLOCKS || !blocks.every(isU32)) malformed(name, 'blocks');
      return { type: 'DIGEST_MISMATCH', blocks: blocks as number[] };
    }
    case 'CONFIRM':
      return { type: 'CONFIRM' };
    case 'ERROR':
      return { type: 'ERROR', code: b.string('code'), message: b.string('message') };
    case 'PING':
      return { type: 'PING', seq: b.u32('seq') };
    case 'PONG':
      return { type: 'PONG', seq: b.u32('seq') };
    case 'EXTENTS_END':
      return { type: 'EXTENTS_END', count: b.u64('count') };
    case 'CREDIT':
      return { type: 'CREDIT', bytes: b.u64('bytes') };
    case 'GUEST_STREAM_END':
      return { type: 'GUEST_STREAM_END' };
    default:
      throw new ProtocolError('PC_ERR_UNKNOWN_TYPE', name);
  }
}

const MAX_STRING = 4096;

/** Field accessors that raise PC_ERR_MALFORMED naming the message and field. */
class Fields {
  constructor(
    readonly msg: string,
    readonly body: Record<string, unknown>,
  ) {}
  raw(k: string): unknown {
    if (!(k in this.body)) malformed(this.msg, `missing ${k}`);
    return this.body[k];
  }
  string(k: string): string {
    const v = this.raw(k);
    if (typeof v !== 'string' || v.length > MAX_STRING) malformed(this.msg, k);
    return v;
  }
  optString(k: string): string | undefined {
    return k in this.body ? this.string(k) : undefined;
  }
  hex(k: string): string {
    const v = this.string(k);
    if (!/^[0-9a-f]*$/.test(v) || v.length % 2 !== 0) malformed(this.msg, `${k} is not hex`);
    return v;
  }
  bool(k: string): boolean {
    const v = this.raw(k);
    if (typeof v !== 'boolean') malformed(this.msg, k);
    return v;
  }
  u32(k: string): number {
    const v = this.raw(k);
    if (!isU32(v)) malformed(this.msg, k);
    return v;
  }
  u64(k: string): number {
    const v = this.raw(k);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) malformed(this.msg, k);
    return v;
  }
  array(k: string): unknown[] {
    const v = this.raw(k);
    if (!Array.isArray(v) || v.length > 256) malformed(this.msg, k);
    return v;
  }
  stringArray(k: string): string[] {
    const v = this.array(k);
    if (!v.every((s) => typeof s === 'string' && s.length <= 64)) malformed(this.msg, k);
    return v as string[];
  }
}

/** BEGIN's image identity: null, or a host (at most 256 characters) and decimal device and inode numbers. */
function beginImage(v: unknown): ImageIdentity | null {
  if (v === null) return null;
  if (!isPlainObject(v)) malformed('BEGIN', 'image');
  const { host, dev, ino } = v;
  const decimal = (x: unknown) => typeof x === 'string' && /^[0-9]{1,20}$/.test(x);
  if (typeof host !== 'string' || host.length === 0 || host.length > 256 || !decimal(dev) || !decimal(ino)) malformed('BEGIN', 'image');
  return { host, dev: dev as string, ino: ino as string };
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function safeU64(p: Buffer, at: number, msg: string): number {
  const v = p.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) malformed(msg, 'offset beyond 2^53');
  return Number(v);
}

function malformed(msg: string, what: string): never {
  throw new ProtocolError('PC_ERR_MALFORMED', `${msg}: ${what}`);
}
