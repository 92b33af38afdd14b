// The one bit-array helper: bit i at bit (i & 7) of byte i >> 3 (the present-bitmap's file holds these bytes),
// checked against a plain array of booleans.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bitBytes, clearBit, clearTail, countSet, hasBit, nextClear, setBit, setFirst, takeSet } from '../../src/common/bits.js';
import { fcParams } from '../helpers/fc.js';

describe('bits', () => {
  it('lays bit i out at bit i & 7 of byte i >> 3, and says whether a set or clear changed anything', () => {
    const bits = new Uint8Array(bitBytes(20));
    expect(bits.length).toBe(3);
    expect(bitBytes(0)).toBe(0);
    expect(bitBytes(8)).toBe(1);
    expect(bitBytes(9)).toBe(2);
    expect(setBit(bits, 0)).toBe(true);
    expect(setBit(bits, 9)).toBe(true);
    expect(setBit(bits, 9)).toBe(false);
    expect(setBit(bits, 19)).toBe(true);
    expect([...bits]).toEqual([0b1, 0b10, 0b1000]);
    expect(hasBit(bits, 9)).toBe(true);
    expect(hasBit(bits, 8)).toBe(false);
    expect(clearBit(bits, 9)).toBe(true);
    expect(clearBit(bits, 9)).toBe(false);
    expect([...bits]).toEqual([0b1, 0, 0b1000]);
    expect(countSet(bits)).toBe(2);
  });

  it('setFirst sets exactly the first n bits; clearTail clears the bits past n only', () => {
    const bits = new Uint8Array(bitBytes(11));
    setFirst(bits, 11);
    expect([...bits]).toEqual([0xff, 0b111]);
    expect(countSet(bits)).toBe(11);
    const whole = new Uint8Array(2);
    setFirst(whole, 16);
    expect([...whole]).toEqual([0xff, 0xff]);
    const full = Uint8Array.of(0xff, 0xff);
    clearTail(full, 9);
    expect([...full]).toEqual([0xff, 0b1]);
    clearTail(full, 16);
    expect([...full]).toEqual([0xff, 0b1]);
  });

  it('nextClear skips whole bytes of set bits and stops at the count', () => {
    const bits = new Uint8Array(bitBytes(20));
    setFirst(bits, 20);
    expect(nextClear(bits, 0, 20)).toBe(-1);
    clearBit(bits, 17);
    expect(nextClear(bits, 0, 20)).toBe(17);
    expect(nextClear(bits, 17, 20)).toBe(17);
    expect(nextClear(bits, 18, 20)).toBe(-1);
    expect(nextClear(bits, 0, 17)).toBe(-1);
    expect(nextClear(new Uint8Array(1), 3, 8)).toBe(3);
  });

  it('takeSet returns the set bits ascending and clears them', () => {
    const bits = new Uint8Array(4);
    for (const i of [31, 0, 7, 8, 13]) setBit(bits, i);
    expect([...takeSet(bits)]).toEqual([0, 7, 8, 13, 31]);
    expect(countSet(bits)).toBe(0);
    expect([...takeSet(bits)]).toEqual([]);
  });

  it('agrees with an array of booleans under any sequence of sets and clears', () => {
    const op = fc.record({ set: fc.boolean(), i: fc.nat({ max: 69 }) });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), fc.nat({ max: 69 }), (ops, from) => {
        const n = 70;
        const bits = new Uint8Array(bitBytes(n));
        const model = new Array<boolean>(n).fill(false);
        for (const { set, i } of ops) {
          const changed = set ? setBit(bits, i) : clearBit(bits, i);
          expect(changed).toBe(model[i] !== set);
          model[i] = set;
        }
        for (let i = 0; i < n; i++) expect(hasBit(bits, i)).toBe(model[i]);
        expect(countSet(bits)).toBe(model.filter(Boolean).length);
        const clear = model.findIndex((v, i) => i >= from && !v);
        expect(nextClear(bits, from, n)).toBe(clear);
        expect([...takeSet(bits)]).toEqual(model.flatMap((v, i) => (v ? [i] : [])));
      }),
      fcParams(),
    );
  });
});
