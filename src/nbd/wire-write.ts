// Small writers the NBD encoders share: u64 fields and the spec's string rules. Pure.
import { NbdError } from '../common/errors.js';
import * as C from './constants.js';

export function u64(buf: Buffer, value: number | bigint, at: number): void {
  buf.writeBigUInt64BE(typeof value === 'bigint' ? value : BigInt(value), at);
}

export function utf8(text: string, what: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > C.NBD_MAX_STRING) {
    throw new NbdError('NBD_ERR_TOO_LARGE', `${what} is ${bytes.length} bytes (max ${C.NBD_MAX_STRING})`);
  }
  return bytes;
}

/** Error text is best effort: cut to the spec's string limit rather than refuse to report. */
export function messageBytes(text: string, max = C.NBD_MAX_STRING): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= max ? bytes : bytes.subarray(0, max);
}

/** One u32 field as its own buffer (a length or count before variable data). */
export function u32Field(value: number): Buffer {
  const buf = Buffer.alloc(C.U32_BYTES);
  buf.writeUInt32BE(value >>> 0, 0);
  return buf;
}
