// The migration wire's messages as values: a union on `type`, control (JSON) and data (binary) messages.
import type { ImageIdentity } from '../common/image-identity.js';
import type { Bytes } from './byte-parts.js';
import type { CLASS_BULK, CLASS_URGENT } from './constants.js';

export type BlockClass = typeof CLASS_URGENT | typeof CLASS_BULK;

export interface GuestDefinition {
  /** The definition kept on the host that runs the guest (what a hypervisor would store). */
  persistent: Record<string, unknown>;
  /** The running instance's definition (devices as they are now). */
  transient: Record<string, unknown>;
}

export type ControlMessage =
  /** ticketId: which ticket S holds (ticketId()), so a host's shared migration port can route; older sources omit it. */
  | { type: 'HELLO'; versions: [number, number]; caps: string[]; nonce: string; resumeSession?: string; ticketId?: string }
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
  /** data: S encodes a Buffer; D decodes the chunks it arrived in (ByteParts), never concatenated. */
  | { type: 'BLOCK_DATA'; id: number; offset: number; data: Bytes; done: boolean; urgent: boolean }
  | { type: 'BLOCK_ZERO'; id: number; offset: number; length: number; done: boolean; urgent: boolean }
  | { type: 'BLOCK_ERR'; id: number; errno: number; message: string }
  | { type: 'GUEST_STREAM'; data: Buffer }
  /** Blocks (index, crc32 of D's bytes, as written or read back) for the final check against S's image. */
  | { type: 'BLOCK_DIGESTS'; entries: Array<[number, number]> };

export type Message = ControlMessage | DataMessage;
export type MessageOf<T extends Message['type']> = Extract<Message, { type: T }>;
