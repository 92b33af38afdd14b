// Examples of D's session core (src/dest/dest-core.ts) for the cases the old agent got wrong or left implicit;
// the model-based test (dest-core.model.test.ts) covers the rest at random.
import { describe, expect, it } from 'vitest';
import { initialState, step } from '../../src/dest/dest-core.js';
import type { DestEffect, DestEvent, DestState } from '../../src/dest/dest-core-types.js';
import type { ImageFile } from '../../src/dest/block-store.js';

const KEYS = { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32) };
const IMAGE: ImageFile = { created: true, identity: { dev: '1', ino: '2' }, priorSize: 0 };
const OK = { ok: true } as const;

function run(events: DestEvent[], from: DestState = initialState(true)): { state: DestState; effects: DestEffect[] } {
  let state = from;
  const effects: DestEffect[] = [];
  for (const e of events) {
    const r = step(state, e, 0);
    state = r.state;
    effects.push(...r.effects);
  }
  return { state, effects };
}

/** A migration with a simulated guest up to the phase the test needs. */
const toReceiving: DestEvent[] = [
  { type: 'link-up', keys: KEYS, resumed: false },
  { type: 'peer', msg: { type: 'BEGIN', guest: { persistent: { kind: 'sim' }, transient: {} }, size: 1 << 20, blockSize: 65536, cookie: 'c' } },
  { type: 'store-prepared', result: OK, created: { image: IMAGE, bitmap: true } },
  { type: 'export-started', result: OK },
  { type: 'guest-prepared', result: OK },
];
const toPostcopy: DestEvent[] = [...toReceiving, { type: 'peer', msg: { type: 'DEVICE_STATE', state: {}, ramDigest: '00' } }, { type: 'guest-loaded', result: OK }, { type: 'guest-started', result: OK }];
const toAwaitingConfirm: DestEvent[] = [...toPostcopy, { type: 'store-complete' }, { type: 'digests-ready', digests: { blocks: [], crcs: [] } }];

const types = (effects: DestEffect[]) => effects.map((e) => (e.type === 'send' ? `send ${e.msg.type}` : e.type === 'persist' ? `persist ${e.phase}` : e.type));

describe("D's session core", () => {
  it('a digest mismatch that invalidates nothing runs the final check again exactly once', () => {
    const at = run(toAwaitingConfirm).state;
    const r = run([{ type: 'peer', msg: { type: 'DIGEST_MISMATCH', blocks: [3] } }, { type: 'invalidated', again: 0 }, { type: 'store-complete' }], at);
    expect(types(r.effects).filter((t) => t === 'compute-digests')).toHaveLength(1);
    // Durably not complete before any bit is cleared.
    expect(types(r.effects).indexOf('persist postcopy')).toBeLessThan(types(r.effects).indexOf('invalidate'));
    expect(r.state.phase).toBe('final-check');
  });

  it('a failed Finish tells S "not running" before anything is undone, and never starts the guest', () => {
    const at = run([...toReceiving, { type: 'peer', msg: { type: 'DEVICE_STATE', state: {}, ramDigest: '00' } }]).state;
    const r = run([{ type: 'guest-loaded', result: { ok: false, error: { code: 'PC_ERR_DIGEST', message: 'RAM digest differs' } } }], at);
    const t = types(r.effects);
    expect(t).not.toContain('start-guest');
    expect(t.indexOf('send FINISH_RESULT')).toBeLessThan(t.indexOf('discard-created'));
    expect(r.effects).toContainEqual({ type: 'send', msg: { type: 'FINISH_RESULT', running: false, error: 'RAM digest differs' } });
    expect(r.state.phase).toBe('rolling-back');
  });

  it('a message S should not send after cut-over closes the link with an error and waits for S; nothing is undone', () => {
    const at = run(toPostcopy).state;
    const once = step(at, { type: 'peer', msg: { type: 'ABORT', reason: 'late' } }, 0);
    expect(once.illegal).toMatchObject({ code: 'PC_ERR_UNEXPECTED' });
    const r = run([{ type: 'peer', msg: { type: 'ABORT', reason: 'late' } }], at);
    expect(types(r.effects)).toContain('close-link');
    expect(r.effects.find((e) => e.type === 'close-link')).toMatchObject({ error: { code: 'PC_ERR_UNEXPECTED' } });
    expect(types(r.effects)).not.toContain('discard-created');
    expect(r.state).toMatchObject({ phase: 'postcopy', ctx: { link: 'down' } });
  });

  it('restarted at complete: COMPLETE only once the store says complete again', () => {
    const restarted: DestEvent = { type: 'restarted', restart: { kind: 'resume', phase: 'complete', keys: KEYS, geometry: { size: 1 << 20, blockSize: 65536 }, image: IMAGE, stateDirCreated: true } };
    const before = run([restarted, { type: 'link-up', keys: KEYS, resumed: true }]);
    // The final check waits for the store: a crash mid-way may have left it short of complete.
    expect(types(before.effects)).not.toContain('compute-digests');
    expect(types(before.effects)).toContain('watch-complete');
    const after = run([{ type: 'store-complete' }, { type: 'digests-ready', digests: { blocks: [], crcs: [] } }], before.state);
    expect(types(after.effects)).toContain('send COMPLETE');
    // Already complete on record: not persisted again.
    expect(types(after.effects)).not.toContain('persist complete');
  });

  it('a restart before cut-over rolls back only what the record says this session created', () => {
    const r = run([{ type: 'restarted', restart: { kind: 'rollback', phase: 'prepared', keys: KEYS, geometry: { size: 1 << 20, blockSize: 65536 }, image: IMAGE, stateDirCreated: true } }]);
    expect(r.effects).toContainEqual({ type: 'discard-created', created: { image: IMAGE, bitmap: true } });
    expect(r.state).toMatchObject({ phase: 'rolling-back', ctx: { saved: 'aborted' } });
  });
});
