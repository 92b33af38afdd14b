// The server's transmission commands: validate a decoded request against the export (spec errnos),
// run it on the BlockDevice, and build the reply buffers. No socket here.
import type { BlockDevice, Extent, ReadTrace } from '../common/block-device.js';
import { NbdError, isPostcopyError } from '../common/errors.js';
import * as codec from './codec.js';
import type { BlockStatusDescriptor, NbdRequest } from './codec.js';
import * as C from './constants.js';
import { BASE_ALLOCATION_ID } from './server-negotiation.js';

export interface TransmissionContext {
  device: BlockDevice;
  structuredReplies: boolean;
  /** base:allocation was selected for this export. */
  baseAllocation: boolean;
  /** Largest READ/WRITE served (the advertised maximum payload). */
  maxPayload: number;
}

export interface Refusal {
  errno: number;
  reason: string;
}

/** Flags each command accepts on top of FUA (which the spec says servers accept everywhere). */
const EXTRA_FLAGS: Record<number, number> = {
  [C.NBD_CMD_WRITE_ZEROES]: C.NBD_CMD_FLAG_NO_HOLE,
  [C.NBD_CMD_BLOCK_STATUS]: C.NBD_CMD_FLAG_REQ_ONE,
};

const WRITE_TYPE = new Set([C.NBD_CMD_WRITE, C.NBD_CMD_TRIM, C.NBD_CMD_WRITE_ZEROES]);

/** The spec's answer for a request the server will not run, or undefined when it is valid. */
export function validateRequest(req: NbdRequest, ctx: TransmissionContext): Refusal | undefined {
  const cmd = req.command;
  const name = C.nameOfCommand(cmd);
  if (cmd > C.NBD_CMD_BLOCK_STATUS || cmd === C.NBD_CMD_DISC) return { errno: C.NBD_EINVAL, reason: `unsupported ${name}` };
  const allowed = C.NBD_CMD_FLAG_FUA | (EXTRA_FLAGS[cmd] ?? 0);
  if ((req.flags & ~allowed) !== 0) return { errno: C.NBD_EINVAL, reason: `flags 0x${req.flags.toString(16)} on ${name}` };
  if (WRITE_TYPE.has(cmd) && ctx.device.readOnly) return { errno: C.NBD_EPERM, reason: `${name} on a read-only export` };
  if (req.payloadDropped || ((cmd === C.NBD_CMD_READ || cmd === C.NBD_CMD_WRITE) && req.length > ctx.maxPayload)) {
    return { errno: C.NBD_EINVAL, reason: `${name} of ${req.length} bytes exceeds ${ctx.maxPayload}` };
  }
  // FLUSH should carry offset 0 and length 0; like qemu-nbd we ignore them rather than fail a flush.
  if (cmd === C.NBD_CMD_FLUSH) return undefined;
  if (req.offset + req.length > ctx.device.size) {
    const errno = cmd === C.NBD_CMD_WRITE || cmd === C.NBD_CMD_WRITE_ZEROES ? C.NBD_ENOSPC : C.NBD_EINVAL;
    return { errno, reason: `${name} [${req.offset}, +${req.length}) past the end (${ctx.device.size})` };
  }
  if (cmd === C.NBD_CMD_BLOCK_STATUS) {
    if (!ctx.structuredReplies || !ctx.baseAllocation) return { errno: C.NBD_EINVAL, reason: 'BLOCK_STATUS without a meta context' };
    if (req.length === 0) return { errno: C.NBD_EINVAL, reason: 'BLOCK_STATUS of length 0' };
  }
  return undefined;
}

/** Map a BlockDevice failure to the errno the client sees: EIO unless something more precise fits. */
export function errnoOf(err: unknown): number {
  if (err instanceof NbdError && err.errno) return err.errno;
  // A system error, or ours wrapping one (a write refused while D's disk is full): the system code decides.
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  const code = isPostcopyError(err) ? e?.cause?.code : e?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return C.NBD_ENOSPC;
    case 'EPERM':
    case 'EROFS':
    case 'EACCES':
      return C.NBD_EPERM;
    case 'EINVAL':
      return C.NBD_EINVAL;
    case 'ENOMEM':
      return C.NBD_ENOMEM;
    case 'ESHUTDOWN':
      return C.NBD_ESHUTDOWN;
    default:
      return C.NBD_EIO;
  }
}

/** Reply buffers reporting errno for req: an ERROR chunk with text under SR, a simple reply otherwise. */
export function errorReply(req: NbdRequest, ctx: TransmissionContext, errno: number, message: string): Buffer[] {
  if (ctx.structuredReplies) return [codec.encodeErrorChunk(req.cookie, C.NBD_REPLY_FLAG_DONE, errno, message)];
  return [codec.encodeSimpleReply(req.cookie, errno)];
}

/** Run a validated request; device errors become error replies, never exceptions. */
export async function executeRequest(req: NbdRequest, ctx: TransmissionContext, trace?: ReadTrace): Promise<{ replies: Buffer[]; failed: boolean }> {
  try {
    return { replies: await run(req, ctx, trace), failed: false };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { replies: errorReply(req, ctx, errnoOf(err), message), failed: true };
  }
}

async function run(req: NbdRequest, ctx: TransmissionContext, trace: ReadTrace | undefined): Promise<Buffer[]> {
  const { device } = ctx;
  const fua = (req.flags & C.NBD_CMD_FLAG_FUA) !== 0;
  const ok = (): Buffer[] => [codec.encodeSimpleReply(req.cookie, 0)];
  switch (req.command) {
    case C.NBD_CMD_READ:
      return readReply(req, ctx, trace);
    case C.NBD_CMD_WRITE:
      if (req.length > 0) await device.write(req.offset, req.data!, { fua });
      else if (fua) await device.flush();
      return ok();
    case C.NBD_CMD_FLUSH:
      await device.flush();
      return ok();
    case C.NBD_CMD_TRIM:
      if (req.length > 0) await device.trim(req.offset, req.length, { fua });
      return ok();
    case C.NBD_CMD_WRITE_ZEROES:
      if (req.length > 0) {
        await device.writeZeroes(req.offset, req.length, { fua, noHole: (req.flags & C.NBD_CMD_FLAG_NO_HOLE) !== 0 });
      }
      return ok();
    case C.NBD_CMD_CACHE:
      if (req.length > 0) await device.cache(req.offset, req.length);
      return ok();
    case C.NBD_CMD_BLOCK_STATUS: {
      const extents = await device.blockStatus(req.offset, req.length);
      const reqOne = (req.flags & C.NBD_CMD_FLAG_REQ_ONE) !== 0;
      const descriptors = toDescriptors(extents, req.offset, req.length, reqOne);
      return [codec.encodeBlockStatusChunk(req.cookie, C.NBD_REPLY_FLAG_DONE, BASE_ALLOCATION_ID, descriptors)];
    }
    default:
      throw new NbdError('NBD_ERR_REQUEST', `unexpected command ${req.command}`, { errno: C.NBD_EINVAL });
  }
}

async function readReply(req: NbdRequest, ctx: TransmissionContext, trace: ReadTrace | undefined): Promise<Buffer[]> {
  if (req.length === 0) {
    return ctx.structuredReplies ? [codec.encodeNoneChunk(req.cookie)] : [codec.encodeSimpleReply(req.cookie, 0)];
  }
  const data = await ctx.device.read(req.offset, req.length, trace);
  if (data.length !== req.length) {
    throw new NbdError('NBD_ERR_REQUEST', `device returned ${data.length} of ${req.length} bytes`, { errno: C.NBD_EIO });
  }
  if (!ctx.structuredReplies) return [codec.encodeSimpleReply(req.cookie, 0), data];
  return [codec.encodeOffsetDataHeader(req.cookie, C.NBD_REPLY_FLAG_DONE, req.offset, data.length), data];
}

/**
 * The device's extents as wire descriptors covering [offset, offset+length) from its start:
 * clipped to the request, adjacent equal states merged, stopping at a gap (a short answer is legal).
 */
export function toDescriptors(extents: readonly Extent[], offset: number, length: number, reqOne: boolean): BlockStatusDescriptor[] {
  const end = offset + length;
  const out: BlockStatusDescriptor[] = [];
  let pos = offset;
  for (const e of extents) {
    if (pos >= end) break;
    const eEnd = e.offset + e.length;
    if (e.offset > pos) break;
    if (eEnd <= pos) continue;
    const len = Math.min(eEnd, end) - pos;
    const flags = e.zero ? C.NBD_STATE_HOLE | C.NBD_STATE_ZERO : 0;
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += len;
    else {
      if (out.length === C.NBD_MAX_EXTENTS) break;
      out.push({ length: len, flags });
    }
    pos += len;
  }
  if (out.length === 0) {
    throw new NbdError('NBD_ERR_REQUEST', `device gave no extent at ${offset}`, { errno: C.NBD_EIO });
  }
  return reqOne ? [out[0]!] : out;
}
