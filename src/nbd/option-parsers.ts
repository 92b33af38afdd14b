// Parsers of NBD option data (the server's side: invalid => { ok: false }, answered with an error reply) and of
// option reply data (the client's side: malformed => NbdError, the connection closes). Pure.
import { NbdError } from '../common/errors.js';
import { readU64 } from './byte-queue.js';
import type { InfoReply, Parsed } from './codec-types.js';
import * as C from './constants.js';

// ---------- option data, parsed by the server (well-framed but invalid => { ok: false }) ----------

function readString(data: Buffer, at: number, len: number, what: string): Parsed<{ value: string }> {
  if (len > C.NBD_MAX_STRING) return { ok: false, reason: `${what} longer than ${C.NBD_MAX_STRING}`, tooBig: true };
  if (at + len > data.length) return { ok: false, reason: `${what} runs past the option data` };
  return { ok: true, value: data.toString('utf8', at, at + len) };
}

/** INFO/GO data: u32 namelen · name · u16 n · n × u16 info id. */
export function parseInfoRequest(data: Buffer): Parsed<{ name: string; infoIds: number[] }> {
  const min = C.INFO_REQUEST_MIN_BYTES;
  if (data.length < min) return { ok: false, reason: `INFO/GO data shorter than ${min} bytes` };
  const nameLen = data.readUInt32BE(C.INFO_REQUEST_AT.nameLength);
  if (nameLen > data.length - min) return { ok: false, reason: 'export name length past the option data' };
  const name = readString(data, C.INFO_REQUEST_AT.name, nameLen, 'export name');
  if (!name.ok) return name;
  const count = data.readUInt16BE(C.INFO_REQUEST_AT.name + nameLen);
  const ids = min + nameLen;
  if (data.length !== ids + C.U16_BYTES * count) return { ok: false, reason: 'info request count does not match length' };
  const infoIds: number[] = [];
  for (let i = 0; i < count; i++) infoIds.push(data.readUInt16BE(ids + C.U16_BYTES * i));
  return { ok: true, name: name.value, infoIds };
}

/** LIST_/SET_META_CONTEXT data: u32 namelen · export · u32 n · n × (u32 len · query). */
export function parseMetaContextRequest(data: Buffer): Parsed<{ exportName: string; queries: string[] }> {
  const min = C.META_REQUEST_MIN_BYTES;
  if (data.length < min) return { ok: false, reason: `meta context data shorter than ${min} bytes` };
  const nameLen = data.readUInt32BE(C.META_REQUEST_AT.nameLength);
  if (nameLen > data.length - min) return { ok: false, reason: 'export name length past the option data' };
  const exportName = readString(data, C.META_REQUEST_AT.name, nameLen, 'export name');
  if (!exportName.ok) return exportName;
  let at = C.META_REQUEST_AT.name + nameLen;
  const count = data.readUInt32BE(at);
  at += C.U32_BYTES;
  // Each query needs at least its 4-byte length: reject impossible counts before looping.
  if (count > (data.length - at) / C.U32_BYTES) return { ok: false, reason: 'query count past the option data' };
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + C.U32_BYTES > data.length) return { ok: false, reason: 'query length past the option data' };
    const len = data.readUInt32BE(at);
    at += C.U32_BYTES;
    const q = readString(data, at, len, 'context query');
    if (!q.ok) return q;
    queries.push(q.value);
    at += len;
  }
  if (at !== data.length) return { ok: false, reason: 'trailing bytes after the queries' };
  return { ok: true, exportName: exportName.value, queries };
}

// ---------- option reply data, parsed by the client (malformed => NbdError) ----------

function malformed(detail: string): NbdError {
  return new NbdError('NBD_ERR_MALFORMED', detail);
}

/** REP_INFO body; lengths are checked exactly as qemu does (12 for EXPORT, 14 for BLOCK_SIZE). */
export function parseInfoReply(data: Buffer): InfoReply {
  if (data.length < C.INFO_REPLY_AT.body) throw malformed(`REP_INFO shorter than ${C.INFO_REPLY_AT.body} bytes`);
  const id = data.readUInt16BE(C.INFO_REPLY_AT.id);
  switch (id) {
    case C.NBD_INFO_EXPORT:
      if (data.length !== C.INFO_EXPORT_LENGTH) throw malformed(`INFO_EXPORT length ${data.length}`);
      return { id, size: readU64(data, C.INFO_EXPORT_AT.size), transmissionFlags: data.readUInt16BE(C.INFO_EXPORT_AT.flags) };
    case C.NBD_INFO_NAME:
      return { id, name: data.toString('utf8', C.INFO_REPLY_AT.body) };
    case C.NBD_INFO_DESCRIPTION:
      return { id, description: data.toString('utf8', C.INFO_REPLY_AT.body) };
    case C.NBD_INFO_BLOCK_SIZE: {
      if (data.length !== C.INFO_BLOCK_SIZE_LENGTH) throw malformed(`INFO_BLOCK_SIZE length ${data.length}`);
      const at = C.INFO_BLOCK_SIZE_AT;
      return { id, minimum: data.readUInt32BE(at.minimum), preferred: data.readUInt32BE(at.preferred), maximum: data.readUInt32BE(at.maximum) };
    }
    default:
      return { id, unknown: true };
  }
}

export function parseRepServer(data: Buffer): { name: string; description: string } {
  const at = C.REP_SERVER_AT;
  if (data.length < at.name) throw malformed(`REP_SERVER shorter than ${at.name} bytes`);
  const len = data.readUInt32BE(at.nameLength);
  if (len > data.length - at.name) throw malformed('REP_SERVER name length past the reply');
  return { name: data.toString('utf8', at.name, at.name + len), description: data.toString('utf8', at.name + len) };
}

export function parseRepMetaContext(data: Buffer): { contextId: number; name: string } {
  const at = C.REP_META_CONTEXT_AT;
  if (data.length < at.name) throw malformed(`REP_META_CONTEXT shorter than ${at.name} bytes`);
  return { contextId: data.readUInt32BE(at.id), name: data.toString('utf8', at.name) };
}
