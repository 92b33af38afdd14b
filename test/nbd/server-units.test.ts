// The server's pure parts: option handling step by step, request validation errnos, device error
// mapping, block status conversion; and the constants' names for logs.
import { describe, expect, it } from 'vitest';
import type { Extent } from '../../src/common/block-device.js';
import { NbdError } from '../../src/common/errors.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { handleOption, resetAfterTls, type ExportCatalog, type NegotiationState } from '../../src/nbd/server-negotiation.js';
import { errnoOf, toDescriptors, validateRequest, type TransmissionContext } from '../../src/nbd/server-requests.js';
import { clientDecoderIn, drainAll } from './helpers/decode.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';

const disk = new MemoryBlockDevice(1 << 20);
const ro = new MemoryBlockDevice(4096, { readOnly: true, multiConnSafe: false });
const catalog: ExportCatalog = {
  find: (n) => (n === '' || n === 'disk' ? { name: 'disk', device: disk, description: 'main' } : n === 'ro' ? { name: 'ro', device: ro } : undefined),
  list: () => [{ name: 'disk', device: disk, description: 'main' }, { name: 'ro', device: ro }],
  blockSizes: () => ({ minimum: 1, preferred: 4096, maximum: 1 << 25 }),
};

function fresh(tls: NegotiationState['tls'] = 'none'): NegotiationState {
  return { noZeroes: true, tls, structuredReplies: false, metaContextExport: undefined };
}

/** Decode the replies an outcome carries. */
function replies(bufs: Buffer[]): Extract<codec.ServerMessage, { type: 'optionReply' }>[] {
  return drainAll(clientDecoderIn('options'), bufs) as Extract<codec.ServerMessage, { type: 'optionReply' }>[];
}

describe('handleOption', () => {
  it('GO "" answers INFO_EXPORT first, NAME/DESCRIPTION/BLOCK_SIZE only when asked, unknown ids ignored, then ACK', () => {
    const out = handleOption(fresh(), catalog, C.NBD_OPT_GO, codec.encodeInfoRequest(C.NBD_OPT_GO, '', [2, 1, 3, 999]).subarray(16));
    expect(out.next).toBe('transmission');
    const infos = replies(out.replies).map((r) => (r.replyType === C.NBD_REP_INFO ? codec.parseInfoReply(r.data) : r.replyType));
    expect(infos).toEqual([
      { id: 0, size: 1 << 20, transmissionFlags: 0x56d },
      { id: 1, name: 'disk' },
      { id: 2, description: 'main' },
      { id: 3, minimum: 1, preferred: 4096, maximum: 1 << 25 },
      C.NBD_REP_ACK,
    ]);
  });

  it('INFO does not enter transmission; read-only export advertises READ_ONLY and no write-type commands', () => {
    const out = handleOption(fresh(), catalog, C.NBD_OPT_INFO, codec.encodeInfoRequest(C.NBD_OPT_INFO, 'ro', []).subarray(16));
    expect(out.next).toBe('continue');
    const info = codec.parseInfoReply(replies(out.replies)[0]!.data);
    expect(info).toEqual({ id: 0, size: 4096, transmissionFlags: C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_READ_ONLY | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_CACHE });
  });

  it('LIST gives every export with its description', () => {
    const out = handleOption(fresh(), catalog, C.NBD_OPT_LIST, Buffer.alloc(0));
    const r = replies(out.replies);
    expect(r.slice(0, 2).map((x) => codec.parseRepServer(x.data))).toEqual([
      { name: 'disk', description: 'main' },
      { name: 'ro', description: '' },
    ]);
    expect(r[2]!.replyType).toBe(C.NBD_REP_ACK);
  });

  it('LIST_META_CONTEXT: all, base: wildcard, exact, unknown namespace ignored; ids are 0', () => {
    for (const queries of [[], ['base:'], ['base:allocation'], ['qemu:dirty-bitmap:x', 'base:allocation']]) {
      const data = codec.encodeMetaContextRequest(C.NBD_OPT_LIST_META_CONTEXT, 'disk', queries).subarray(16);
      const r = replies(handleOption(fresh(), catalog, C.NBD_OPT_LIST_META_CONTEXT, data).replies);
      expect(r.map((x) => x.replyType)).toEqual([C.NBD_REP_META_CONTEXT, C.NBD_REP_ACK]);
      expect(codec.parseRepMetaContext(r[0]!.data)).toEqual({ contextId: 0, name: 'base:allocation' });
    }
    const none = codec.encodeMetaContextRequest(C.NBD_OPT_LIST_META_CONTEXT, 'disk', ['qemu:allocation-depth']).subarray(16);
    expect(replies(handleOption(fresh(), catalog, C.NBD_OPT_LIST_META_CONTEXT, none).replies).map((x) => x.replyType)).toEqual([C.NBD_REP_ACK]);
  });

  it('SET_META_CONTEXT selects for that export only; a later SET replaces; GO of another export gets none', () => {
    const st = fresh();
    handleOption(st, catalog, C.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    const set = (name: string, q: string[]) =>
      handleOption(st, catalog, C.NBD_OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest(C.NBD_OPT_SET_META_CONTEXT, name, q).subarray(16));
    const r = replies(set('disk', ['base:allocation']).replies);
    expect(codec.parseRepMetaContext(r[0]!.data)).toEqual({ contextId: 1, name: 'base:allocation' });
    expect(st.metaContextExport).toBe('disk');
    const go = (name: string) => handleOption(st, catalog, C.NBD_OPT_GO, codec.encodeInfoRequest(C.NBD_OPT_GO, name, []).subarray(16));
    expect(go('ro')).toMatchObject({ next: 'transmission', baseAllocation: false });
    expect(go('')).toMatchObject({ next: 'transmission', baseAllocation: true });
    set('disk', []);
    expect(st.metaContextExport).toBeUndefined();
    expect(replies(set('nope', ['base:allocation']).replies)[0]!.replyType).toBe(C.NBD_REP_ERR_UNKNOWN);
  });

  it('EXPORT_NAME: reply with padding unless NO_ZEROES; unknown name closes', () => {
    const st = fresh();
    st.noZeroes = false;
    const out = handleOption(st, catalog, C.NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    expect(out).toMatchObject({ next: 'transmission' });
    expect(out.replies[0]!.length).toBe(134);
    expect(handleOption(fresh(), catalog, C.NBD_OPT_EXPORT_NAME, Buffer.from('x'))).toMatchObject({ next: 'close' });
  });

  it('ABORT acknowledges and closes', () => {
    const out = handleOption(fresh(), catalog, C.NBD_OPT_ABORT, Buffer.alloc(0));
    expect(out.next).toBe('close');
    expect(replies(out.replies)[0]!.replyType).toBe(C.NBD_REP_ACK);
  });

  it('a string over 4096 bytes is ERR_TOO_BIG', () => {
    const data = Buffer.concat([Buffer.from([0, 0, 0x10, 0x01]), Buffer.alloc(4097, 0x61), Buffer.from([0, 0])]);
    expect(replies(handleOption(fresh(), catalog, C.NBD_OPT_GO, data).replies)[0]!.replyType).toBe(C.NBD_REP_ERR_TOO_BIG);
  });
});

describe('handleOption on a TLS-only server (FORCEDTLS)', () => {
  const body = (opt: number, name = 'disk'): Buffer => codec.encodeInfoRequest(opt, name, []).subarray(16);
  it('before STARTTLS every option but STARTTLS and ABORT is TLS_REQD, and nothing is told about the exports', () => {
    const st = fresh('required');
    const cases: [number, Buffer][] = [
      [C.NBD_OPT_GO, body(C.NBD_OPT_GO)],
      [C.NBD_OPT_INFO, body(C.NBD_OPT_INFO, 'nope')],
      [C.NBD_OPT_LIST, Buffer.alloc(0)],
      [C.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0)],
      [C.NBD_OPT_LIST_META_CONTEXT, codec.encodeMetaContextRequest(C.NBD_OPT_LIST_META_CONTEXT, 'disk', []).subarray(16)],
      [C.NBD_OPT_EXTENDED_HEADERS, Buffer.alloc(0)],
      [99, Buffer.alloc(7)],
    ];
    for (const [opt, data] of cases) {
      const out = handleOption(st, catalog, opt, data);
      expect(out.next, C.nameOfOption(opt)).toBe('continue');
      const r = replies(out.replies);
      expect(r.map((x) => x.replyType), C.nameOfOption(opt)).toEqual([C.NBD_REP_ERR_TLS_REQD]);
    }
    expect(st.structuredReplies).toBe(false);
  });

  it('EXPORT_NAME before STARTTLS closes (no error reply exists for it); ABORT is acknowledged', () => {
    expect(handleOption(fresh('required'), catalog, C.NBD_OPT_EXPORT_NAME, Buffer.from('disk'))).toMatchObject({ next: 'close', replies: [] });
    const abort = handleOption(fresh('required'), catalog, C.NBD_OPT_ABORT, Buffer.alloc(0));
    expect(abort.next).toBe('close');
    expect(replies(abort.replies)[0]!.replyType).toBe(C.NBD_REP_ACK);
  });

  it('STARTTLS is acknowledged and asks for the TLS handshake; with data it is INVALID', () => {
    const out = handleOption(fresh('required'), catalog, C.NBD_OPT_STARTTLS, Buffer.alloc(0));
    expect(out.next).toBe('starttls');
    expect(replies(out.replies).map((x) => x.replyType)).toEqual([C.NBD_REP_ACK]);
    const bad = handleOption(fresh('required'), catalog, C.NBD_OPT_STARTTLS, Buffer.alloc(1));
    expect(replies(bad.replies)[0]!.replyType).toBe(C.NBD_REP_ERR_INVALID);
  });

  it('after the handshake: state negotiated in the clear is forgotten, a second STARTTLS is INVALID, GO works', () => {
    const st = fresh('none');
    handleOption(st, catalog, C.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    resetAfterTls(st);
    expect(st).toMatchObject({ tls: 'active', structuredReplies: false, metaContextExport: undefined, noZeroes: true });
    expect(replies(handleOption(st, catalog, C.NBD_OPT_STARTTLS, Buffer.alloc(0)).replies)[0]!.replyType).toBe(C.NBD_REP_ERR_INVALID);
    expect(handleOption(st, catalog, C.NBD_OPT_GO, body(C.NBD_OPT_GO)).next).toBe('transmission');
  });

  it('without TLS configured STARTTLS is POLICY and TLS_REQD is never sent', () => {
    const out = handleOption(fresh('none'), catalog, C.NBD_OPT_STARTTLS, Buffer.alloc(0));
    expect(replies(out.replies)[0]!.replyType).toBe(C.NBD_REP_ERR_POLICY);
  });
});

describe('validateRequest', () => {
  const ctx: TransmissionContext = { device: disk, structuredReplies: true, baseAllocation: true, maxPayload: 1 << 16 };
  const req = (command: number, offset: number, length: number, flags = 0): codec.NbdRequest => ({ type: 'request', command, offset, length, flags, cookie: 1n });
  const table: [string, codec.NbdRequest, number | undefined][] = [
    ['READ ok', req(C.NBD_CMD_READ, 0, 4096), undefined],
    ['READ to the last byte', req(C.NBD_CMD_READ, (1 << 20) - 1, 1), undefined],
    ['READ one past', req(C.NBD_CMD_READ, (1 << 20) - 1, 2), C.NBD_EINVAL],
    ['READ at 2^64-1', req(C.NBD_CMD_READ, 2 ** 64 - 1, 1), C.NBD_EINVAL],
    ['WRITE past the end', req(C.NBD_CMD_WRITE, 1 << 20, 1), C.NBD_ENOSPC],
    ['WRITE_ZEROES past the end', req(C.NBD_CMD_WRITE_ZEROES, 1 << 20, 1), C.NBD_ENOSPC],
    ['WRITE_ZEROES larger than max payload is fine', req(C.NBD_CMD_WRITE_ZEROES, 0, 1 << 20, C.NBD_CMD_FLAG_NO_HOLE), undefined],
    ['TRIM past the end', req(C.NBD_CMD_TRIM, 1 << 20, 1), C.NBD_EINVAL],
    ['CACHE past the end', req(C.NBD_CMD_CACHE, 1 << 20, 1), C.NBD_EINVAL],
    ['READ over max payload', req(C.NBD_CMD_READ, 0, (1 << 16) + 1), C.NBD_EINVAL],
    ['BLOCK_STATUS over max payload is fine', req(C.NBD_CMD_BLOCK_STATUS, 0, 1 << 20, C.NBD_CMD_FLAG_REQ_ONE), undefined],
    ['BLOCK_STATUS past the end', req(C.NBD_CMD_BLOCK_STATUS, 0, (1 << 20) + 1), C.NBD_EINVAL],
    ['NO_HOLE on WRITE', req(C.NBD_CMD_WRITE, 0, 1, C.NBD_CMD_FLAG_NO_HOLE), C.NBD_EINVAL],
    ['FUA on every command', req(C.NBD_CMD_CACHE, 0, 1, C.NBD_CMD_FLAG_FUA), undefined],
    ['RESIZE unsupported', req(C.NBD_CMD_RESIZE, 0, 0), C.NBD_EINVAL],
    ['FLUSH ok', req(C.NBD_CMD_FLUSH, 0, 0, C.NBD_CMD_FLAG_FUA), undefined],
  ];
  for (const [name, r, errno] of table) {
    it(name, () => expect(validateRequest(r, ctx)?.errno).toBe(errno));
  }
  it('read-only export: EPERM for write-type commands, before range checks', () => {
    const roCtx = { ...ctx, device: ro };
    for (const cmd of [C.NBD_CMD_WRITE, C.NBD_CMD_TRIM, C.NBD_CMD_WRITE_ZEROES]) expect(validateRequest(req(cmd, 1 << 30, 1), roCtx)?.errno).toBe(C.NBD_EPERM);
    expect(validateRequest(req(C.NBD_CMD_READ, 0, 1), roCtx)).toBeUndefined();
  });
});

describe('errnoOf and toDescriptors', () => {
  it('maps device failures', () => {
    expect(errnoOf(new Error('x'))).toBe(C.NBD_EIO);
    expect(errnoOf(Object.assign(new Error('x'), { code: 'EDQUOT' }))).toBe(C.NBD_ENOSPC);
    expect(errnoOf(Object.assign(new Error('x'), { code: 'EROFS' }))).toBe(C.NBD_EPERM);
    expect(errnoOf(new NbdError('NBD_ERR_REQUEST', 'x', { errno: C.NBD_ESHUTDOWN }))).toBe(C.NBD_ESHUTDOWN);
    expect(errnoOf('string')).toBe(C.NBD_EIO);
  });

  const ext = (offset: number, length: number, zero: boolean): Extent => ({ offset, length, zero });
  it('clips, merges, stops at a gap, honours REQ_ONE', () => {
    const extents = [ext(0, 100, false), ext(100, 100, false), ext(200, 50, true), ext(300, 10, false)];
    expect(toDescriptors(extents, 50, 180, false)).toEqual([
      { length: 150, flags: 0 },
      { length: 30, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO },
    ]);
    expect(toDescriptors(extents, 0, 1000, false)).toEqual([
      { length: 200, flags: 0 },
      { length: 50, flags: 3 },
    ]);
    expect(toDescriptors(extents, 0, 1000, true)).toEqual([{ length: 200, flags: 0 }]);
    expect(() => toDescriptors([ext(10, 5, false)], 0, 100, false)).toThrow(NbdError);
  });
});

describe('constants names', () => {
  it('names known values and marks unknown ones', () => {
    expect(C.nameOfOption(C.NBD_OPT_GO)).toBe('NBD_OPT_GO');
    expect(C.nameOfOption(77)).toBe('NBD_OPT_UNKNOWN(77)');
    expect(C.nameOfReplyType(C.NBD_REP_ERR_POLICY)).toBe('NBD_REP_ERR_POLICY');
    expect(C.nameOfCommand(C.NBD_CMD_BLOCK_STATUS)).toBe('NBD_CMD_BLOCK_STATUS');
    expect(C.nameOfChunkType(C.NBD_REPLY_TYPE_ERROR_OFFSET)).toBe('NBD_REPLY_TYPE_ERROR_OFFSET');
    expect(C.nameOfErrno(C.NBD_ENOSPC)).toBe('ENOSPC');
    expect(C.nameOfInfo(C.NBD_INFO_BLOCK_SIZE)).toBe('NBD_INFO_BLOCK_SIZE');
    expect(C.nameOfTransmissionFlags(0x8003)).toBe('HAS_FLAGS|READ_ONLY|0x8000');
  });
});
