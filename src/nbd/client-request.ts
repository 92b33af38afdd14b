// One outstanding client request and the checks on every reply chunk for it: type fits the
// command, data/holes inside the range without overlap and covering it all, the context id we
// negotiated. accept() throws NbdError for a server that broke the rules (hard close).
import { NbdError } from '../common/errors.js';
import type { BlockStatusDescriptor, ChunkBody, ServerMessage } from './codec-types.js';
import * as C from './constants.js';

export type RequestResult = Buffer | BlockStatusDescriptor[] | undefined;

interface Piece {
  offset: number;
  length: number;
  /** Absent for a hole. */
  data?: Buffer;
}

function malformed(detail: string): NbdError {
  return new NbdError('NBD_ERR_MALFORMED', detail);
}

/**
 * Data is usually a view of a socket read buffer: hand it out as is when it is most of that
 * buffer, else copy, so a cached 4 KiB block never pins a 64 KiB socket chunk.
 */
function ownBytes(data: Buffer): Buffer {
  return data.length * C.CLIENT_VIEW_MIN_SHARE >= data.buffer.byteLength ? data : Buffer.from(data);
}

export class PendingRequest {
  readonly cookie: bigint;
  readonly command: number;
  readonly offset: number;
  readonly length: number;
  readonly #contextId: number | undefined;
  readonly #resolve: (v: RequestResult) => void;
  readonly #reject: (e: Error) => void;
  #pieces: Piece[] = [];
  #extents: BlockStatusDescriptor[] | undefined;
  #error: NbdError | undefined;
  #chunks = 0;

  constructor(
    cookie: bigint,
    command: number,
    offset: number,
    length: number,
    contextId: number | undefined,
    resolve: (v: RequestResult) => void,
    reject: (e: Error) => void,
  ) {
    this.cookie = cookie;
    this.command = command;
    this.offset = offset;
    this.length = length;
    this.#contextId = contextId;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  get name(): string {
    return C.nameOfCommand(this.command);
  }

  /** Payload length following a successful simple reply. */
  get simpleReplyLength(): number {
    return this.command === C.NBD_CMD_READ ? this.length : 0;
  }

  fail(err: Error): void {
    this.#reject(err);
  }

  /** A simple reply always ends the request. */
  simpleReply(error: number, data: Buffer | undefined): void {
    if (this.#chunks > 0) throw malformed(`simple reply after structured chunks for ${this.name}`);
    if (error !== 0) return this.#reject(this.#requestError(error, ''));
    if (this.command === C.NBD_CMD_BLOCK_STATUS) throw malformed('BLOCK_STATUS answered by a simple reply');
    this.#resolve(this.command === C.NBD_CMD_READ ? ownBytes(data ?? Buffer.alloc(0)) : undefined);
  }

  /** One structured chunk; returns true when it was the last (DONE). */
  chunk(body: ChunkBody, done: boolean): boolean {
    this.#chunks++;
    switch (body.kind) {
      case 'none':
        break;
      case 'data':
        this.#piece(body.offset, body.data.length, body.data);
        break;
      case 'hole':
        this.#piece(body.offset, body.length, undefined);
        break;
      case 'blockStatus':
        if (this.command !== C.NBD_CMD_BLOCK_STATUS) throw malformed(`BLOCK_STATUS chunk for ${this.name}`);
        if (body.contextId !== this.#contextId) throw malformed(`BLOCK_STATUS for context ${body.contextId}, negotiated ${this.#contextId}`);
        if (this.#extents) throw malformed('two BLOCK_STATUS chunks for one context');
        this.#extents = body.extents;
        break;
      case 'error':
        if (body.offset !== undefined && (body.offset < this.offset || body.offset >= this.offset + this.length)) {
          throw malformed(`ERROR_OFFSET ${body.offset} outside the request`);
        }
        this.#error ??= this.#requestError(body.error, body.message);
        break;
    }
    if (done) this.#finish();
    return done;
  }

  #piece(offset: number, length: number, data: Buffer | undefined): void {
    if (this.command !== C.NBD_CMD_READ) throw malformed(`read data chunk for ${this.name}`);
    if (offset < this.offset || offset + length > this.offset + this.length) {
      throw malformed(`chunk [${offset}, +${length}) outside the request [${this.offset}, +${this.length})`);
    }
    this.#pieces.push(data ? { offset, length, data } : { offset, length });
  }

  #requestError(errno: number, message: string): NbdError {
    const detail = `${this.name} [${this.offset}, +${this.length}): ${C.nameOfErrno(errno)}${message ? ` (${message})` : ''}`;
    return new NbdError('NBD_ERR_REQUEST', detail, { errno });
  }

  #finish(): void {
    if (this.#error) return this.#reject(this.#error);
    switch (this.command) {
      case C.NBD_CMD_READ:
        return this.#resolve(this.#assemble());
      case C.NBD_CMD_BLOCK_STATUS:
        if (!this.#extents) throw malformed('BLOCK_STATUS finished without a status chunk');
        return this.#resolve(this.#extents);
      default:
        return this.#resolve(undefined);
    }
  }

  /** Every byte covered exactly once; the single-chunk case (nbdkit, and most of ours) is zero-copy. */
  #assemble(): Buffer {
    const pieces = this.#pieces.sort((a, b) => a.offset - b.offset);
    let pos = this.offset;
    for (const p of pieces) {
      if (p.offset !== pos) throw malformed(p.offset < pos ? 'overlapping read chunks' : `read reply leaves [${pos}, ${p.offset}) uncovered`);
      pos += p.length;
    }
    if (pos !== this.offset + this.length) throw malformed(`read reply ends at ${pos}, request at ${this.offset + this.length}`);
    if (pieces.length === 1 && pieces[0]!.data) return ownBytes(pieces[0]!.data);
    const out = Buffer.alloc(this.length);
    for (const p of pieces) if (p.data) p.data.copy(out, p.offset - this.offset);
    return out;
  }
}

/** The client's requests awaiting replies, by cookie: each reply goes to its request, which checks it. */
export class PendingRequests {
  readonly #byCookie = new Map<bigint, PendingRequest>();

  add(req: PendingRequest): void {
    this.#byCookie.set(req.cookie, req);
  }

  has(cookie: bigint): boolean {
    return this.#byCookie.has(cookie);
  }

  /** Payload bytes after a successful simple reply for this cookie; undefined for no such request. */
  simpleReplyLength(cookie: bigint): number | undefined {
    return this.#byCookie.get(cookie)?.simpleReplyLength;
  }

  /** Hand a transmission reply to its request; a reply no request is waiting for is the server breaking the rules. */
  onReply(msg: ServerMessage): void {
    if (msg.type !== 'simpleReply' && msg.type !== 'chunk') throw malformed(`unexpected ${msg.type} in transmission`);
    const req = this.#byCookie.get(msg.cookie);
    if (!req) throw new NbdError('NBD_ERR_UNKNOWN_COOKIE', `reply for cookie ${msg.cookie}`);
    if (msg.type === 'simpleReply') {
      this.#byCookie.delete(msg.cookie);
      req.simpleReply(msg.error, msg.data);
    } else if (req.chunk(msg.body, msg.done)) {
      this.#byCookie.delete(msg.cookie);
    }
  }

  failAll(failure: Error): void {
    for (const req of this.#byCookie.values()) req.fail(failure);
    this.#byCookie.clear();
  }
}
