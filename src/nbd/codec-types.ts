// The NBD messages as values: what the two streaming decoders yield, what the encoders take and what the
// option parsers return. Types only, so decoders, encoders and parsers share them without importing each other.
import type * as C from './constants.js';

// ---------- messages the server decoder yields (client -> server) ----------

export type ClientMessage =
  | { type: 'clientFlags'; flags: number }
  | { type: 'option'; option: number; data: Buffer }
  | NbdRequest;

export interface NbdRequest {
  type: 'request';
  flags: number;
  command: number;
  cookie: bigint;
  /** u64 on the wire; values past 2^53 lose precision but stay past any disk's end. */
  offset: number;
  length: number;
  /** WRITE payload (absent for other commands, and for a WRITE whose payload was too big and dropped). */
  data?: Buffer;
  /** A WRITE longer than the decoder's max payload: its payload was skipped to stay in sync. */
  payloadDropped?: boolean;
}

// ---------- messages the client decoder yields (server -> client) ----------

export type ServerMessage =
  | { type: 'greeting'; flags: number }
  | { type: 'optionReply'; option: number; replyType: number; data: Buffer }
  | { type: 'exportNameReply'; size: number; transmissionFlags: number }
  | { type: 'simpleReply'; error: number; cookie: bigint; data?: Buffer }
  | { type: 'chunk'; flags: number; cookie: bigint; done: boolean; body: ChunkBody };

export interface BlockStatusDescriptor {
  length: number;
  flags: number;
}

export type ChunkBody =
  | { kind: 'none' }
  | { kind: 'data'; offset: number; data: Buffer }
  | { kind: 'hole'; offset: number; length: number }
  | { kind: 'blockStatus'; contextId: number; extents: BlockStatusDescriptor[] }
  | { kind: 'error'; chunkType: number; error: number; message: string; offset?: number };

// ---------- values the encoders take and the parsers return ----------

export interface BlockSizeLimits {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface RequestHeader {
  flags: number;
  command: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** A server-side parse of option data: well-framed but invalid data is { ok: false } (an error reply, not a close). */
export type Parsed<T> = ({ ok: true } & T) | { ok: false; reason: string; tooBig?: boolean };

export type InfoReply =
  | { id: typeof C.NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { id: typeof C.NBD_INFO_NAME; name: string }
  | { id: typeof C.NBD_INFO_DESCRIPTION; description: string }
  | ({ id: typeof C.NBD_INFO_BLOCK_SIZE } & BlockSizeLimits)
  | { id: number; unknown: true };
