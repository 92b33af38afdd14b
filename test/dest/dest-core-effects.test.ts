// D's effect executor (src/dest/dest-effects.ts): effects run in the order the core gave them, a persist is on
// disk before what follows it, a failed persist stops its batch and comes back as an event, timers fire as events,
// and a rollback deletes only what the session created.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nullEvents } from '../../src/common/events.js';
import { silentLogger } from '../../src/common/logger.js';
import { pathIdentity } from '../../src/common/image-identity.js';
import { AwayReporter } from '../../src/dest/away-reporter.js';
import { initialState } from '../../src/dest/dest-core.js';
import type { DestEffect, DestEvent, DestState } from '../../src/dest/dest-core-types.js';
import type { DestClock } from '../../src/dest/dest-clock.js';
import { DestEffects } from '../../src/dest/dest-effects.js';
import { FILE_STORES } from '../../src/dest/dest-store.js';
import { BITMAP_FILE, SESSION_FILE } from '../../src/dest/dest-session.js';
import { ExportOwner, NO_EXPORT } from '../../src/dest/export-owner.js';
import { Fetcher } from '../../src/dest/fetcher.js';
import type { Link } from '../../src/link/link.js';
import type { Message } from '../../src/protocol/messages.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A clock whose timers fire when the test says. */
class ManualClock implements DestClock {
  readonly timers = new Map<number, () => void>();
  #next = 1;
  now = () => 0;
  setTimer = (_ms: number, fire: () => void): unknown => {
    const id = this.#next++;
    this.timers.set(id, fire);
    return id;
  };
  clearTimer = (h: unknown): void => void this.timers.delete(h as number);
  fireAll(): void {
    const fns = [...this.timers.values()];
    this.timers.clear();
    for (const f of fns) f();
  }
}

function setup(o: { stateDir?: string; onDispatch?: (e: DestEvent) => void } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'dest-effects-'));
  dirs.push(dir);
  const stateDir = o.stateDir ?? dir;
  const events: DestEvent[] = [];
  const sent: Array<{ msg: Message; phaseOnDisk: string | null }> = [];
  const sessionFile = join(stateDir, SESSION_FILE);
  const link = {
    closed: false,
    send: (msg: Message) => sent.push({ msg, phaseOnDisk: existsSync(sessionFile) ? (JSON.parse(readFileSync(sessionFile, 'utf8')) as { phase: string }).phase : null }),
    close: () => {},
  } as unknown as Link;
  const base = initialState(false);
  let state: DestState = { ...base, ctx: { ...base.ctx, keys: { sessionId: 'ab'.repeat(16), resumeKey: 'cd'.repeat(32) }, geometry: { size: 65536, blockSize: 65536 } } };
  const clock = new ManualClock();
  const log = silentLogger();
  const fx = new DestEffects(
    {
      log,
      events: nullEvents,
      stateDir,
      imagePath: join(dir, 'd.img'),
      bitmapPath: join(stateDir, BITMAP_FILE),
      fetcher: new Fetcher(log),
      away: new AwayReporter(log, nullEvents, () => ({ bytesOnlyOnSource: 0, fallback: 'none' })),
      exporter: new ExportOwner(NO_EXPORT),
      clock,
      timerMs: { 'abort-grace': 1, 'confirm-grace': 1 },
      store: {},
      stores: FILE_STORES,
      guests: () => {
        throw new Error('no guest here');
      },
    },
    { state: () => state, link: () => link, dispatch: (e) => {
      o.onDispatch?.(e);
      events.push(e);
    }, finish: () => {}, progress: () => ({}), adoptStore: () => {} },
  );
  return { dir, fx, events, sent, clock, setState: (s: DestState) => (state = s) };
}

const complete: Message = { type: 'COMPLETE', blocks: 1, pristineBlocks: 0 };

describe("D's effect executor", () => {
  it('a persist is on disk before the send that follows it', () => {
    const t = setup();
    t.fx.run([{ type: 'persist', phase: 'complete' }, { type: 'send', msg: complete }]);
    expect(t.sent).toEqual([{ msg: complete, phaseOnDisk: 'complete' }]);
  });

  it('a persist that fails stops its batch (nothing after it runs) and comes back as a local-fault event', () => {
    const t = setup();
    const notADir = join(t.dir, 'file');
    writeFileSync(notADir, 'x');
    const u = setup({ stateDir: join(notADir, 'state') });
    u.fx.run([{ type: 'persist', phase: 'postcopy' }, { type: 'send', msg: { type: 'FINISH_RESULT', running: true } }]);
    expect(u.sent).toEqual([]);
    expect(u.events.map((e) => e.type)).toEqual(['local-fault']);
  });

  it('a best-effort persist that fails is logged and the batch goes on', () => {
    const t = setup();
    const notADir = join(t.dir, 'file');
    writeFileSync(notADir, 'x');
    const u = setup({ stateDir: join(notADir, 'state') });
    u.fx.run([{ type: 'persist', phase: 'aborted', bestEffort: true }, { type: 'send', msg: { type: 'ABORT', reason: 'x' } }]);
    expect(u.sent.map((s) => s.msg.type)).toEqual(['ABORT']);
    expect(u.events).toEqual([]);
  });

  it('an armed timer comes back as a timer event; a cancelled one does not', () => {
    const t = setup();
    t.fx.run([{ type: 'arm-timer', name: 'abort-grace' }, { type: 'arm-timer', name: 'confirm-grace' }, { type: 'cancel-timer', name: 'confirm-grace' }]);
    t.clock.fireAll();
    expect(t.events).toEqual([{ type: 'timer', name: 'abort-grace' }]);
  });

  it('a rollback deletes only what the session created, then says discarded', async () => {
    // What exists at the moment `discarded` is said: the core reports the rollback on it, so the files must be gone.
    const atDiscarded: boolean[][] = [];
    const t = setup({ onDispatch: (e) => void (e.type === 'discarded' && atDiscarded.push([existsSync(image), existsSync(bitmap)])) });
    const image = join(t.dir, 'd.img');
    const bitmap = join(t.dir, BITMAP_FILE);
    writeFileSync(image, Buffer.alloc(65536));
    writeFileSync(bitmap, 'b');
    // Nothing recorded as created: the files at those paths are not ours and stay.
    const keepAll: DestEffect = { type: 'discard-created', created: { image: null, bitmap: false } };
    t.fx.run([keepAll]);
    await t.fx.discarded;
    expect([existsSync(image), existsSync(bitmap)]).toEqual([true, true]);
    // The image this session created (same file, same identity) and its bitmap go.
    t.fx.run([{ type: 'discard-created', created: { image: { created: true, identity: pathIdentity(image)!, priorSize: 0 }, bitmap: true } }]);
    await t.fx.discarded;
    expect([existsSync(image), existsSync(bitmap)]).toEqual([false, false]);
    expect(t.events.map((e) => e.type)).toEqual(['discarded', 'discarded']);
    expect(atDiscarded).toEqual([[true, true], [false, false]]);
  });
});
