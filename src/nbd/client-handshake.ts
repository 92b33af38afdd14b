// The client's fixed-newstyle negotiation: client flags, STRUCTURED_REPLY, SET_META_CONTEXT
// base:allocation, GO with BLOCK_SIZE; each refusal falls back (simple replies, no contexts,
// EXPORT_NAME) the way qemu and libnbd do.
import { NbdError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ClientDecoder } from './client-decoder.js';
import * as codec from './codec.js';
import type { BlockSizeLimits, ServerMessage } from './codec.js';
import * as C from './constants.js';

/** How the handshake talks to the socket; the client supplies it. */
export interface HandshakeIo {
  /** The next decoded message; rejects when the connection fails. */
  next(): Promise<ServerMessage>;
  send(buf: Buffer): void;
  decoder: ClientDecoder;
}

export interface HandshakePreferences {
  structuredReplies: boolean;
  baseAllocation: boolean;
}

export interface NegotiatedExport {
  exportName: string;
  size: number;
  transmissionFlags: number;
  structuredReplies: boolean;
  /** Context id of base:allocation, when the server selected it. */
  baseAllocationId: number | undefined;
  /** Server's block size constraints, when it sent sane ones. */
  blockSizes: BlockSizeLimits | undefined;
  via: 'GO' | 'EXPORT_NAME';
}

type OptionReply = Extract<ServerMessage, { type: 'optionReply' }>;

async function nextOptionReply(io: HandshakeIo, option: number): Promise<OptionReply> {
  const msg = await io.next();
  if (msg.type !== 'optionReply') throw new NbdError('NBD_ERR_HANDSHAKE', `expected an option reply, got ${msg.type}`);
  if (msg.option !== option) {
    throw new NbdError('NBD_ERR_HANDSHAKE', `reply for ${C.nameOfOption(msg.option)} while waiting for ${C.nameOfOption(option)}`);
  }
  if (msg.replyType === C.NBD_REP_ACK && msg.data.length !== 0) throw new NbdError('NBD_ERR_MALFORMED', 'ACK with data');
  return msg;
}

function isError(reply: OptionReply): boolean {
  return (reply.replyType & C.NBD_REP_FLAG_ERROR) !== 0;
}

function optionError(option: number, reply: OptionReply): NbdError {
  const text = reply.data.toString('utf8');
  return new NbdError('NBD_ERR_OPTION', `${C.nameOfOption(option)}: ${C.nameOfReplyType(reply.replyType)}${text ? ` (${text})` : ''}`);
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** The spec's constraints on INFO_BLOCK_SIZE; libnbd ignores impossible values, and so do we. */
function saneBlockSizes(b: BlockSizeLimits, size: number): boolean {
  return (
    isPowerOfTwo(b.minimum) &&
    b.minimum <= C.NBD_MAX_MIN_BLOCK &&
    isPowerOfTwo(b.preferred) &&
    b.preferred >= b.minimum &&
    b.maximum >= b.minimum &&
    size % b.minimum === 0
  );
}

export async function negotiate(
  io: HandshakeIo,
  exportName: string,
  prefs: HandshakePreferences,
  log: Logger,
): Promise<NegotiatedExport> {
  const greeting = await io.next();
  if (greeting.type !== 'greeting') throw new NbdError('NBD_ERR_HANDSHAKE', 'no greeting');
  const fixed = (greeting.flags & C.NBD_FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (greeting.flags & C.NBD_FLAG_NO_ZEROES) !== 0;
  io.send(codec.encodeClientFlags((fixed ? C.NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? C.NBD_FLAG_C_NO_ZEROES : 0)));
  // Plain (non-fixed) newstyle servers can't answer unknown options: go straight to EXPORT_NAME.
  if (!fixed) return exportNameFallback(io, exportName, noZeroes, false, undefined);

  let structuredReplies = false;
  if (prefs.structuredReplies) {
    io.send(codec.encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
    const reply = await nextOptionReply(io, C.NBD_OPT_STRUCTURED_REPLY);
    // Any error counts as "unsupported" (qemu does the same); anything but ACK/error is a broken server.
    if (!isError(reply) && reply.replyType !== C.NBD_REP_ACK) {
      throw new NbdError('NBD_ERR_HANDSHAKE', `STRUCTURED_REPLY answered ${C.nameOfReplyType(reply.replyType)}`);
    }
    structuredReplies = !isError(reply);
  }

  let baseAllocationId: number | undefined;
  if (structuredReplies && prefs.baseAllocation) baseAllocationId = await setMetaContext(io, exportName);

  io.send(codec.encodeInfoRequest(C.NBD_OPT_GO, exportName, [C.NBD_INFO_BLOCK_SIZE]));
  let exportInfo: { size: number; transmissionFlags: number } | undefined;
  let blockSizes: BlockSizeLimits | undefined;
  for (;;) {
    const reply = await nextOptionReply(io, C.NBD_OPT_GO);
    if (isError(reply)) {
      if (reply.replyType === C.NBD_REP_ERR_UNSUP) {
        log.debug('server refused GO; falling back to EXPORT_NAME');
        return exportNameFallback(io, exportName, noZeroes, structuredReplies, baseAllocationId);
      }
      throw optionError(C.NBD_OPT_GO, reply);
    }
    if (reply.replyType === C.NBD_REP_ACK) break;
    if (reply.replyType !== C.NBD_REP_INFO) {
      throw new NbdError('NBD_ERR_HANDSHAKE', `GO answered ${C.nameOfReplyType(reply.replyType)}`);
    }
    const info = codec.parseInfoReply(reply.data);
    if (info.id === C.NBD_INFO_EXPORT && 'size' in info) exportInfo = { size: info.size, transmissionFlags: info.transmissionFlags };
    else if (info.id === C.NBD_INFO_BLOCK_SIZE && 'minimum' in info) {
      blockSizes = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
    }
  }
  if (!exportInfo) throw new NbdError('NBD_ERR_HANDSHAKE', 'GO acknowledged without INFO_EXPORT');
  if (blockSizes && !saneBlockSizes(blockSizes, exportInfo.size)) {
    log.warn({ blockSizes, size: exportInfo.size }, 'ignoring impossible NBD block size constraints');
    blockSizes = undefined;
  }
  io.decoder.enterTransmission(structuredReplies);
  return { exportName, ...exportInfo, structuredReplies, baseAllocationId, blockSizes, via: 'GO' };
}

/** SET_META_CONTEXT base:allocation; any refusal means "no allocation information". */
async function setMetaContext(io: HandshakeIo, exportName: string): Promise<number | undefined> {
  io.send(codec.encodeMetaContextRequest(C.NBD_OPT_SET_META_CONTEXT, exportName, [C.NBD_META_BASE_ALLOCATION]));
  let id: number | undefined;
  for (;;) {
    const reply = await nextOptionReply(io, C.NBD_OPT_SET_META_CONTEXT);
    if (isError(reply)) return undefined;
    if (reply.replyType === C.NBD_REP_ACK) return id;
    if (reply.replyType !== C.NBD_REP_META_CONTEXT) {
      throw new NbdError('NBD_ERR_HANDSHAKE', `SET_META_CONTEXT answered ${C.nameOfReplyType(reply.replyType)}`);
    }
    const ctx = codec.parseRepMetaContext(reply.data);
    // Like qemu: the server must only name what we asked for.
    if (ctx.name !== C.NBD_META_BASE_ALLOCATION) {
      throw new NbdError('NBD_ERR_HANDSHAKE', `server selected unrequested context ${JSON.stringify(ctx.name.slice(0, 64))}`);
    }
    id = ctx.contextId;
  }
}

async function exportNameFallback(
  io: HandshakeIo,
  exportName: string,
  noZeroes: boolean,
  structuredReplies: boolean,
  baseAllocationId: number | undefined,
): Promise<NegotiatedExport> {
  io.send(codec.encodeExportNameOption(exportName));
  io.decoder.expectExportNameReply(noZeroes);
  let msg: ServerMessage;
  try {
    msg = await io.next();
  } catch (err) {
    // EXPORT_NAME can only be refused by closing.
    throw new NbdError('NBD_ERR_OPTION', `server closed after NBD_OPT_EXPORT_NAME ${JSON.stringify(exportName)} (unknown export?)`, {
      cause: err,
    });
  }
  if (msg.type !== 'exportNameReply') throw new NbdError('NBD_ERR_HANDSHAKE', `expected the EXPORT_NAME reply, got ${msg.type}`);
  io.decoder.enterTransmission(structuredReplies);
  return {
    exportName,
    size: msg.size,
    transmissionFlags: msg.transmissionFlags,
    structuredReplies,
    baseAllocationId,
    blockSizes: undefined,
    via: 'EXPORT_NAME',
  };
}
