// Checked reads of a control message's JSON fields, each failure a PC_ERR_MALFORMED naming message and field.
import { ProtocolError } from '../common/errors.js';
import { MAX_ARRAY, MAX_CAPABILITY_NAME, MAX_STRING } from './message-layout.js';

/** Field accessors that raise PC_ERR_MALFORMED naming the message and field. */
export class Fields {
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
  optHex(k: string): string | undefined {
    return k in this.body ? this.hex(k) : undefined;
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
    if (!Array.isArray(v) || v.length > MAX_ARRAY) malformed(this.msg, k);
    return v;
  }
  stringArray(k: string): string[] {
    const v = this.array(k);
    if (!v.every((s) => typeof s === 'string' && s.length <= MAX_CAPABILITY_NAME)) malformed(this.msg, k);
    return v as string[];
  }
}

export function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function malformed(msg: string, what: string): never {
  throw new ProtocolError('PC_ERR_MALFORMED', `${msg}: ${what}`);
}
