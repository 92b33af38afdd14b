// A push parser for `qemu-img map --output=json` of a raw image: a JSON array of flat extent objects, taken a chunk
// at a time so a map of millions of extents never sits in memory whole. Strict: the extents must follow each other
// from 0 with no gap or overlap and cover exactly the image; anything else is refused (the caller scans instead).
import { BackendError } from '../common/errors.js';
import { MAP_MAX_OBJECT_CHARS } from './constants.js';

export interface MapExtent {
  offset: number;
  length: number;
  /** The tool says the range reads as zeroes (a hole, or an extent it knows is zero). */
  zero: boolean;
}

type State = 'start' | 'first' | 'object' | 'after' | 'next' | 'done';

const OPEN_ARRAY = 0x5b; // [
const CLOSE_ARRAY = 0x5d; // ]
const OPEN_OBJECT = 0x7b; // {
const CLOSE_OBJECT = 0x7d; // }
const COMMA = 0x2c;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function refuse(why: string): never {
  throw new BackendError('PC_ERR_BACKEND', `extent map refused: ${why}`);
}

export class QemuMapParser {
  readonly #size: number;
  readonly #onExtent: (e: MapExtent) => void;
  #state: State = 'start';
  /** Text of the object being read (at most MAP_MAX_OBJECT_CHARS). */
  #object = '';
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** Where the next extent must start. */
  #next = 0;
  #count = 0;
  #dataBytes = 0;

  constructor(size: number, onExtent: (e: MapExtent) => void) {
    this.#size = size;
    this.#onExtent = onExtent;
  }

  get extents(): number {
    return this.#count;
  }
  /** Bytes of the extents that are not zero. */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  push(text: string): void {
    let objectFrom = -1;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      switch (this.#state) {
        case 'start':
          if (c === OPEN_ARRAY) this.#state = 'first';
          else if (!isSpace(c)) refuse(`expected '[' at the start, got ${JSON.stringify(text[i])}`);
          break;
        case 'first':
        case 'next':
          if (c === OPEN_OBJECT) {
            this.#state = 'object';
            this.#depth = 1;
            objectFrom = i;
          } else if (c === CLOSE_ARRAY && this.#state === 'first') this.#state = 'done';
          else if (!isSpace(c)) refuse(`expected an extent object, got ${JSON.stringify(text[i])}`);
          break;
        case 'object':
          if (objectFrom < 0) objectFrom = i;
          if (this.#inString) {
            if (this.#escaped) this.#escaped = false;
            else if (c === BACKSLASH) this.#escaped = true;
            else if (c === QUOTE) this.#inString = false;
          } else if (c === QUOTE) this.#inString = true;
          else if (c === OPEN_OBJECT || c === OPEN_ARRAY) this.#depth++;
          else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) this.#depth--;
          // The cap holds before the text is kept: a line without end is never buffered past it.
          if (this.#object.length + (i - objectFrom + 1) > MAP_MAX_OBJECT_CHARS) refuse(`an extent object longer than ${MAP_MAX_OBJECT_CHARS} characters`);
          if (this.#depth === 0) {
            const whole = this.#object + text.slice(objectFrom, i + 1);
            this.#object = '';
            objectFrom = -1;
            this.#extent(whole);
            this.#state = 'after';
          }
          break;
        case 'after':
          if (c === COMMA) this.#state = 'next';
          else if (c === CLOSE_ARRAY) this.#state = 'done';
          else if (!isSpace(c)) refuse(`expected ',' or ']' after an extent, got ${JSON.stringify(text[i])}`);
          break;
        case 'done':
          if (!isSpace(c)) refuse(`text after the end of the map: ${JSON.stringify(text.slice(i, i + 40))}`);
          break;
      }
    }
    if (this.#state === 'object' && objectFrom >= 0) this.#object += text.slice(objectFrom);
  }

  /** The tool has exited: the map must be whole and cover the image exactly. */
  end(): void {
    if (this.#state !== 'done') refuse(`the map ends early (${this.#state === 'start' ? 'no output' : 'inside the array'})`);
    if (this.#next !== this.#size) refuse(`the map covers ${this.#next} of ${this.#size} bytes`);
  }

  #extent(text: string): void {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      refuse(`extent ${this.#count} is not JSON: ${text.slice(0, 80)}`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) refuse(`extent ${this.#count} is not an object`);
    const o = v as Record<string, unknown>;
    const { start, length, zero, data, present } = o;
    if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0) refuse(`extent ${this.#count}: bad start ${JSON.stringify(start)}`);
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length <= 0) refuse(`extent ${this.#count}: bad length ${JSON.stringify(length)}`);
    if (typeof zero !== 'boolean' || typeof data !== 'boolean') refuse(`extent ${this.#count}: 'zero' and 'data' must be booleans`);
    if (present !== undefined && typeof present !== 'boolean') refuse(`extent ${this.#count}: 'present' must be a boolean`);
    if (start < this.#next) refuse(`extent ${this.#count} at ${start} overlaps the one before (which ends at ${this.#next})`);
    if (start > this.#next) refuse(`a gap in the map at ${this.#next}..${start}`);
    if (length > this.#size - start) refuse(`extent ${this.#count} at ${start}+${length} reaches past the image (${this.#size} bytes)`);
    this.#next = start + length;
    this.#count++;
    if (!zero) this.#dataBytes += length;
    this.#onExtent({ offset: start, length, zero });
  }
}
