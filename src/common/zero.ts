// Zero detection: a zero block never travels, whichever side finds it.
import { ZERO_COMPARE_GRAIN as GRAIN } from './constants.js';

const ZEROES = Buffer.alloc(GRAIN);

/** True when every byte is zero (compared a grain at a time against a zero buffer: memcmp speed). */
export function isAllZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += GRAIN) {
    const part = buf.subarray(at, Math.min(buf.length, at + GRAIN));
    if (!part.equals(part.length === GRAIN ? ZEROES : ZEROES.subarray(0, part.length))) return false;
  }
  return true;
}
