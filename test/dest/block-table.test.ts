// D's per-block state table on its own: each named transition, the ones it refuses, and a property against a
// plain model under random sequences of fetches, arrivals, guest writes, zeroes, sync losses and invalidations.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StateError } from '../../src/common/errors.js';
import { BlockTable, type BlockState } from '../../src/dest/block-table.js';
import { CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import { expectThrows } from '../helpers/errors.js';
import { fcParams } from '../helpers/fc.js';

const refused = (fn: () => void) => expectThrows(fn, StateError, 'PC_ERR_STATE');

describe('block table transitions', () => {
  it('missing → writing → S\'s bytes: neither missing nor present while written; the guest, S\'s other copies and zeroes refused meanwhile', () => {
    const t = new BlockTable(4);
    t.fetchIssued(1, CLASS_BULK);
    t.writeStarted(1);
    t.fetchSettled(1, CLASS_BULK);
    expect(t.stateOf(1)).toBe('writing');
    // Not present (no bit, no reads from the image) and not to be fetched again (in flight).
    expect([t.isPresent(1), t.isWriting(1), t.isInflight(1), t.isTouched(1), t.presentCount]).toEqual([false, true, true, true, 0]);
    expect(t.nextMissing(0)).toBe(0);
    refused(() => t.writeStarted(1));
    refused(() => t.sourceArrived(1, 5));
    refused(() => t.zeroArrived(1));
    refused(() => t.guestWrote(1, true));
    expect(t.stateOf(1)).toBe('writing');
    // An urgent fetch may still be asked (by a reader that came before the bytes); its copy is dropped later.
    t.fetchIssued(1, CLASS_URGENT);
    t.fetchSettled(1, CLASS_URGENT);
    t.writeLanded(1, 0x77);
    expect([t.stateOf(1), t.isInflight(1), t.digestOf(1), t.presentCount]).toEqual(['source', false, 0x77, 1]);
    refused(() => t.writeLanded(1));
    refused(() => t.writeStarted(1));
    t.guestWrote(1, false);
    expect(t.stateOf(1)).toBe('guest');
  });

  it('a failed write leaves the block missing (its place touched), to be fetched again; nothing else is refused', () => {
    const t = new BlockTable(2);
    refused(() => t.writeFailed(0));
    t.writeStarted(0);
    t.writeFailed(0);
    expect([t.stateOf(0), t.isPresent(0), t.isInflight(0), t.isTouched(0), t.presentCount]).toEqual(['missing', false, false, true, 0]);
    t.writeStarted(0);
    t.writeLanded(0);
    expect(t.stateOf(0)).toBe('source');
  });


  it('missing → fetching → S\'s bytes: present, touched, its digest kept; an urgent fetch only once and only of a missing block', () => {
    const t = new BlockTable(4);
    expect(t.stateOf(1)).toBe('missing');
    t.fetchIssued(1, CLASS_URGENT);
    expect(t.stateOf(1)).toBe('fetching');
    expect(t.isFetching(1, CLASS_URGENT)).toBe(true);
    expect(t.isFetching(1, CLASS_BULK)).toBe(false);
    refused(() => t.fetchIssued(1, CLASS_URGENT));
    t.fetchIssued(1, CLASS_BULK);
    t.sourceArrived(1, 0xabc);
    expect(t.stateOf(1)).toBe('source');
    expect(t.isInflight(1)).toBe(true);
    expect([t.isPresent(1), t.isPristine(1), t.isTouched(1), t.isZero(1), t.digestOf(1)]).toEqual([true, true, true, false, 0xabc]);
    t.fetchSettled(1, CLASS_URGENT);
    expect(t.isInflight(1)).toBe(true);
    t.fetchSettled(1, CLASS_BULK);
    expect(t.isInflight(1)).toBe(false);
    refused(() => t.fetchIssued(1, CLASS_URGENT));
    t.fetchIssued(1, CLASS_BULK);
    expect(t.isInflight(1)).toBe(true);
    expect(t.presentCount).toBe(1);
  });

  it('a late copy is refused over any present block and changes nothing', () => {
    const t = new BlockTable(3, (b) => b === 2);
    t.sourceArrived(0, 1);
    t.guestWrote(1, true);
    for (const b of [0, 1, 2]) {
      const before = t.stateOf(b);
      refused(() => t.sourceArrived(b, 9));
      refused(() => t.zeroArrived(b, 9));
      expect(t.stateOf(b)).toBe(before);
    }
    expect(t.digestOf(0)).toBe(1);
    expect(t.presentCount).toBe(3);
    expect(t.complete).toBe(true);
  });

  it('S\'s zeroes: present, known zero, digest kept, not touched (a hole of a fresh image stays a hole)', () => {
    const t = new BlockTable(2);
    t.zeroArrived(0, 7);
    expect([t.stateOf(0), t.isZero(0), t.isPristine(0), t.isTouched(0), t.digestOf(0)]).toEqual(['source-zero', true, true, false, 7]);
    t.sourceArrived(1);
    expect(t.digestOf(1)).toBeUndefined();
  });

  it('guest writes: whole over anything, partial only over a present block; zeroes only over the guest\'s own', () => {
    const t = new BlockTable(4);
    refused(() => t.guestWrote(0, false));
    expect(t.stateOf(0)).toBe('missing');
    t.guestWrote(0, true);
    expect([t.stateOf(0), t.isTouched(0), t.isPristine(0)]).toEqual(['guest', true, false]);
    t.sourceArrived(1, 5);
    t.guestWrote(1, false);
    expect([t.stateOf(1), t.digestOf(1)]).toEqual(['guest', undefined]);
    refused(() => t.guestZeroed(2));
    t.zeroArrived(2, 1);
    refused(() => t.guestZeroed(2));
    t.guestZeroed(0);
    expect([t.stateOf(0), t.isZero(0)]).toEqual(['guest-zero', true]);
    t.guestZeroed(0);
    t.guestWrote(0, false);
    expect([t.stateOf(0), t.isZero(0)]).toEqual(['guest', false]);
    expect(t.presentCount).toBe(3);
  });

  it('a failed guest write: a missing block stays missing (but touched), a present one becomes the guest\'s', () => {
    const t = new BlockTable(5, (b) => b === 4);
    t.sourceArrived(1, 1);
    t.zeroArrived(2, 2);
    t.guestWrote(3, true);
    t.guestZeroed(3);
    for (const b of [0, 1, 2, 3, 4]) t.guestWriteFailed(b);
    expect([0, 1, 2, 3, 4].map((b) => t.stateOf(b))).toEqual(['missing', 'guest', 'guest', 'guest', 'restored']);
    expect([0, 1, 2, 3, 4].map((b) => t.isTouched(b))).toEqual([true, true, true, true, true]);
    expect([t.digestOf(1), t.digestOf(2)]).toEqual([undefined, undefined]);
    expect(t.presentCount).toBe(4);
  });

  it('a lost sync takes back only S\'s bytes this run wrote; the guest\'s blocks and untouched holes stay', () => {
    const t = new BlockTable(4, (b) => b === 3);
    t.sourceArrived(0, 1);
    t.zeroArrived(1, 2);
    t.guestWrote(2, true);
    expect([0, 1, 2, 3].map((b) => t.syncLost(b))).toEqual([true, false, false, false]);
    expect([t.stateOf(0), t.isTouched(0), t.digestOf(0)]).toEqual(['missing', true, undefined]);
    expect(t.syncLost(0)).toBe(false);
    t.landedPartly(1);
    expect(t.syncLost(1)).toBe(true);
    expect(t.presentCount).toBe(2);
  });

  it('invalidation takes back a pristine block only, and marks its place untrusted', () => {
    const t = new BlockTable(4, (b) => b === 3);
    t.zeroArrived(0, 1);
    t.guestWrote(1, true);
    t.invalidated(0);
    expect([t.stateOf(0), t.isTouched(0), t.isZero(0), t.digestOf(0)]).toEqual(['missing', true, false, undefined]);
    for (const b of [0, 1, 2, 3]) refused(() => t.invalidated(b));
    expect(t.presentCount).toBe(2);
    expect(t.pristineCount()).toBe(0);
  });

  it('a refusal names the block, the transition and the state it was refused in; restored blocks are the table\'s own only', () => {
    const t = new BlockTable(3, () => true);
    expect(t.presentCount).toBe(3);
    const u = new BlockTable(4);
    u.fetchIssued(0, CLASS_URGENT);
    u.sourceArrived(1, 1);
    u.guestWrote(2, true);
    const messages = [
      () => u.fetchIssued(0, CLASS_URGENT),
      () => u.sourceArrived(1),
      () => u.zeroArrived(2),
      () => u.guestWrote(3, false),
      () => u.guestZeroed(1),
      () => u.invalidated(2),
    ].map((fn) => refused(fn).message);
    expect(messages).toEqual([
      'illegal state transition: block 0: urgent fetch refused in state fetching',
      "illegal state transition: block 1: S's bytes refused in state source",
      "illegal state transition: block 2: S's zeroes refused in state guest",
      'illegal state transition: block 3: partial guest write refused in state missing',
      'illegal state transition: block 1: guest zeroes refused in state source',
      'illegal state transition: block 2: invalidate refused in state guest',
    ]);
  });

  it('nextMissing scans from a block; blocks outside the table are missing and never present', () => {
    const t = new BlockTable(10, (b) => b < 4 || b === 5);
    expect([t.nextMissing(0), t.nextMissing(4), t.nextMissing(5), t.nextMissing(7), t.nextMissing(10), t.nextMissing(-1)]).toEqual([4, 4, 6, 7, -1, -1]);
    expect([t.isPresent(-1), t.isPresent(10), t.isPresent(1.5)]).toEqual([false, false, false]);
    expect(t.presentCount).toBe(5);
    expect(t.complete).toBe(false);
  });
});

// ---- the property: the table against a plain model ----

type Kind = 'missing' | 'source' | 'source-zero' | 'guest' | 'guest-zero';
interface ModelBlock {
  kind: Kind;
  touched: boolean;
  crc?: number;
  urgent: boolean;
  bulk: boolean;
  /** S's bytes for it are being written off the event loop. */
  writing: boolean;
  /** Who last put bytes there: the property's own record, independent of the kinds. */
  content: 'S' | 'guest' | null;
}

const N = 12;
type Op =
  | { op: 'fetch' | 'settle'; b: number; urgent: boolean }
  | { op: 'data'; b: number; crc: number | undefined }
  | { op: 'zero'; b: number; crc: number | undefined }
  | { op: 'write'; b: number; whole: boolean }
  | { op: 'write-start' | 'write-fail'; b: number }
  | { op: 'write-landed'; b: number; crc: number | undefined }
  | { op: 'zeroes' | 'write-failed' | 'invalidate' | 'sync-lost'; b: number };

const block = fc.nat({ max: N - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('fetch' as const, 'settle' as const), b: block, urgent: fc.boolean() }),
  fc.record({ op: fc.constant('data' as const), b: block, crc: fc.option(fc.nat(), { nil: undefined }) }),
  fc.record({ op: fc.constant('zero' as const), b: block, crc: fc.option(fc.nat(), { nil: undefined }) }),
  fc.record({ op: fc.constant('write' as const), b: block, whole: fc.boolean() }),
  fc.record({ op: fc.constantFrom('write-start' as const, 'write-fail' as const), b: block }),
  fc.record({ op: fc.constant('write-landed' as const), b: block, crc: fc.option(fc.nat(), { nil: undefined }) }),
  fc.record({ op: fc.constantFrom('zeroes' as const, 'write-failed' as const, 'invalidate' as const, 'sync-lost' as const), b: block }),
);

const present = (m: ModelBlock) => m.kind !== 'missing';
const pristine = (m: ModelBlock) => m.kind === 'source' || m.kind === 'source-zero';

/** Apply op to the model; false when the table must refuse it (and change nothing). */
function applyModel(m: ModelBlock, o: Op): boolean {
  switch (o.op) {
    case 'fetch':
      if (o.urgent && (present(m) || m.urgent)) return false;
      if (o.urgent) m.urgent = true;
      else m.bulk = true;
      return true;
    case 'settle':
      if (o.urgent) m.urgent = false;
      else m.bulk = false;
      return true;
    case 'data':
    case 'zero':
      if (present(m) || m.writing) return false;
      m.kind = o.op === 'data' ? 'source' : 'source-zero';
      if (o.op === 'data') m.touched = true;
      m.crc = o.crc;
      m.content = 'S';
      return true;
    case 'write-start':
      if (present(m) || m.writing) return false;
      Object.assign(m, { writing: true, touched: true });
      return true;
    case 'write-landed':
      if (!m.writing) return false;
      Object.assign(m, { writing: false, kind: 'source', touched: true, crc: o.crc, content: 'S' });
      return true;
    case 'write-fail':
      if (!m.writing) return false;
      Object.assign(m, { writing: false, touched: true });
      return true;
    case 'write':
      // A guest write waits for a write of S's bytes in flight: over one, it is refused.
      if ((!o.whole && !present(m)) || m.writing) return false;
      Object.assign(m, { kind: 'guest', touched: true, crc: undefined, content: 'guest' });
      return true;
    case 'zeroes':
      if (m.kind !== 'guest' && m.kind !== 'guest-zero') return false;
      m.kind = 'guest-zero';
      return true;
    case 'write-failed':
      if (present(m)) Object.assign(m, { kind: 'guest', content: 'guest' });
      Object.assign(m, { touched: true, crc: undefined });
      return true;
    case 'sync-lost':
      if (pristine(m) && m.touched) Object.assign(m, { kind: 'missing', crc: undefined, content: null });
      return true;
    case 'invalidate':
      if (!pristine(m)) return false;
      Object.assign(m, { kind: 'missing', crc: undefined, content: null, touched: true });
      return true;
  }
}

function applyTable(t: BlockTable, o: Op): void {
  const cls = 'urgent' in o && o.urgent ? CLASS_URGENT : CLASS_BULK;
  switch (o.op) {
    case 'fetch': return t.fetchIssued(o.b, cls);
    case 'settle': return t.fetchSettled(o.b, cls);
    case 'data': return t.sourceArrived(o.b, o.crc);
    case 'zero': return t.zeroArrived(o.b, o.crc);
    case 'write': return t.guestWrote(o.b, o.whole);
    case 'write-start': return t.writeStarted(o.b);
    case 'write-landed': return t.writeLanded(o.b, o.crc);
    case 'write-fail': return t.writeFailed(o.b);
    case 'zeroes': return t.guestZeroed(o.b);
    case 'write-failed': return t.guestWriteFailed(o.b);
    case 'invalidate': return t.invalidated(o.b);
    case 'sync-lost': return void t.syncLost(o.b);
  }
}

function expectedState(m: ModelBlock): BlockState {
  if (m.kind === 'missing' && m.writing) return 'writing';
  return m.kind === 'missing' && (m.urgent || m.bulk) ? 'fetching' : m.kind;
}

describe('block table against a model', () => {
  it('refuses exactly what the model refuses; states, digests and counts agree; S never replaces a present block or the guest\'s bytes', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
        const t = new BlockTable(N);
        const model: ModelBlock[] = Array.from({ length: N }, () => ({ kind: 'missing', touched: false, urgent: false, bulk: false, writing: false, content: null }));
        for (const o of ops) {
          const m = model[o.b]!;
          const before = { state: t.stateOf(o.b), content: m.content };
          const legal = applyModel(m, o);
          if (legal) applyTable(t, o);
          else {
            refused(() => applyTable(t, o));
            expect(t.stateOf(o.b)).toBe(before.state);
          }
          // A late fetch never lands on a present block; S's bytes never replace the guest's.
          if ((o.op === 'data' || o.op === 'zero') && before.state !== 'missing' && before.state !== 'fetching') expect(legal).toBe(false);
          // The guest never writes over a block whose write of S's bytes is in flight (it would land over the guest's).
          if (o.op === 'write' && before.state === 'writing') expect(legal).toBe(false);
          if (before.content === 'guest' && (o.op === 'data' || o.op === 'zero')) expect(m.content).toBe('guest');
          for (let b = 0; b < N; b++) {
            const mb = model[b]!;
            expect(t.stateOf(b)).toBe(expectedState(mb));
            expect(t.isTouched(b)).toBe(mb.touched);
            expect([t.isFetching(b, CLASS_URGENT), t.isFetching(b, CLASS_BULK)]).toEqual([mb.urgent, mb.bulk]);
            expect([t.isWriting(b), t.isInflight(b)]).toEqual([mb.writing, mb.urgent || mb.bulk || mb.writing]);
            expect(t.digestOf(b)).toBe(pristine(mb) ? mb.crc : undefined);
          }
          const presentCount = model.filter(present).length;
          expect(t.presentCount).toBe(presentCount);
          expect(t.pristineCount()).toBe(model.filter(pristine).length);
          expect(t.nextMissing(0)).toBe(model.findIndex((mb) => !present(mb)));
        }
      }),
      fcParams(),
    );
  });
});
