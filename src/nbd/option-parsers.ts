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
  if (data.length < 6) return { ok: false, reason: 'INFO/GO data shorter than 6 bytes' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return { ok: false, reason: 'export name length past the option data' };
  const name = readString(data, 4, nameLen, 'export name');
  if (!name.ok) return name;
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) return { ok: false, reason: 'info request count does not match length' };
  const infoIds: number[] = [];
  for (let i = 0; i < count; i++) infoIds.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { ok: true, name: name.value, infoIds };
}

/** LIST_/SET_META_CONTEXT data: u32 namelen · export · u32 n · n × (u32 len · query). */
export function parseMetaContextRequest(data: Buffer): Parsed<{ exportName: string; queries: string[] }> {
  if (data.length < 8) return { ok: false, reason: 'meta context data shorter than 8 bytes' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return { ok: false, reason: 'export name length past the option data' };
  const exportName = readString(data, 4, nameLen, 'export name');
  if (!exportName.ok) return exportName;
  let at = 4 + nameLen;
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query needs at least its 4-byte length: reject impossible counts before looping.
  if (count > (data.length - at) / 4) return { ok: false, reason: 'query count past the option data' };
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return { ok: false, reason: 'query length past the option data' };
    const len = data.readUInt32BE(at);
    at += 4;
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
  if (data.length < 2) throw malformed('REP_INFO shorter than 2 bytes');
  const id = data.readUInt16BE(0);
  switch (id) {
    case C.NBD_INFO_EXPORT:
      if (data.length !== C.INFO_EXPORT_LENGTH) throw malformed(`INFO_EXPORT length ${data.length}`);
      return { id, size: readU64(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case C.NBD_INFO_NAME:
      return { id, name: data.toString('utf8', 2) };
    case C.NBD_INFO_DESCRIPTION:
      return { id, description: data.toString('utf8', 2) };
    case C.NBD_INFO_BLOCK_SIZE:
      if (data.length !== C.INFO_BLOCK_SIZE_LENGTH) throw malformed(`INFO_BLOCK_SIZE length ${data.length}`);
      return { id, minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default:
      return { id, unknown: true };
  }
}

export function parseRepServer(data: Buffer): { name: string; description: string } {
  if (data.length < 4) throw malformed('REP_SERVER shorter than 4 bytes');
  const len = data.readUInt32BE(0);
  if (len > data.length - 4) throw malformed('REP_SERVER name length past the reply');
  return { name: data.toString('utf8', 4, 4 + len), description: data.toString('utf8', 4 + len) };
}

export function parseRepMetaContext(data: Buffer): { contextId: number; name: string } {
  if (data.length < 4) throw malformed('REP_META_CONTEXT shorter than 4 bytes');
  return { contextId: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}
