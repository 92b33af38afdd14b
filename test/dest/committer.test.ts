// The block store's committer on its own: batches, the order of image sync and bitmap write, what a failed sync
// or bitmap write does to the batch, the background timer, and what a background failure logs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { Committer, type CommitterOptions } from '../../src/dest/committer.js';
import { PresentBitmap } from '../../src/dest/present-bitmap.js';
import { COMMIT_INTERVAL_MS } from '../../src/dest/store-constants.js';
import { systemError } from '../faults/fault-file-io.js';
import { waitUntil } from '../helpers/wait.js';

let dir: string;
let bitmap: PresentBitmap;
let events: string[];
let lost: Set<number>;
let failSync: boolean;
let onSync: () => void;
let faultActive: boolean;

function makeCommitter(extra: Partial<CommitterOptions> = {}): Committer {
  return new Committer({
    bitmap,
    syncImage: async () => {
      events.push('image sync');
      onSync();
      if (failSync) throw systemError('EIO', 'fdatasync');
    },
    lost: (b) => lost.has(b),
    diskFailed: (e) => events.push(`disk failed ${(e as NodeJS.ErrnoException).code}`),
    committed: () => events.push(`committed, durable ${bitmap.durableCount}`),
    faultActive: () => faultActive,
    log: silentLogger(),
    ...extra,
  });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pc-committer-'));
  bitmap = PresentBitmap.create(join(dir, 'bitmap'), 4096, 16);
  events = [];
  lost = new Set();
  failSync = false;
  onSync = () => {};
  faultActive = false;
  // No background commit unless a test lets the interval pass: each test decides when its commits run.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
});
afterEach(() => {
  vi.useRealTimers();
  bitmap.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('committer', () => {
  it('commits what was tracked in one batch: image sync first, then the bits; a commit with nothing pending still syncs', async () => {
    const c = makeCommitter();
    c.track(3);
    c.track(5);
    expect([bitmap.has(3), bitmap.isDurable(3), c.pendingCount]).toEqual([true, false, 2]);
    const bitmapCommit = vi.spyOn(bitmap, 'commit');
    await c.commit();
    c.stop();
    expect(events).toEqual(['image sync', 'committed, durable 2']);
    expect(bitmapCommit).toHaveBeenCalledWith([3, 5]);
    expect(c.pendingCount).toBe(0);
    await c.commit();
    expect(events).toEqual(['image sync', 'committed, durable 2', 'image sync', 'committed, durable 2']);
  });

  it('a block tracked while the image syncs waits for the next commit (its data may not be in that sync)', async () => {
    const c = makeCommitter();
    c.track(1);
    onSync = () => {
      onSync = () => {};
      c.track(2);
    };
    await c.commit();
    expect([bitmap.isDurable(1), bitmap.isDurable(2), c.pendingCount]).toEqual([true, false, 1]);
    await c.commit();
    c.stop();
    expect(bitmap.isDurable(2)).toBe(true);
  });

  it('a failed image sync: lost blocks are forgotten, the rest stay pending ahead of newer ones; the commit rejects', async () => {
    const c = makeCommitter();
    for (const b of [1, 2, 3]) c.track(b);
    lost = new Set([2]);
    failSync = true;
    const bitmapCommit = vi.spyOn(bitmap, 'commit');
    await expect(c.commit()).rejects.toMatchObject({ code: 'EIO' });
    expect(events).toEqual(['image sync', 'disk failed EIO']);
    expect(bitmapCommit).not.toHaveBeenCalled();
    expect([bitmap.has(1), bitmap.has(2), bitmap.has(3)]).toEqual([true, false, true]);
    c.track(4);
    failSync = false;
    await c.commit();
    c.stop();
    expect(bitmapCommit).toHaveBeenLastCalledWith([1, 3, 4]);
  });

  it('a failed bitmap write keeps the whole batch pending, ahead of newer blocks; the next commit after it goes on', async () => {
    const c = makeCommitter();
    c.track(1);
    const real = bitmap.commit.bind(bitmap);
    const bitmapCommit = vi.spyOn(bitmap, 'commit').mockImplementationOnce(async () => {
      c.track(2);
      throw systemError('ENOSPC', 'write');
    });
    await expect(c.commit()).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(events).toEqual(['image sync', 'disk failed ENOSPC']);
    expect(c.pendingCount).toBe(2);
    bitmapCommit.mockImplementation(real);
    await c.commit();
    c.stop();
    expect(bitmapCommit).toHaveBeenLastCalledWith([1, 2]);
    expect(c.pendingCount).toBe(0);
  });

  it('commits in the background once the interval after the first block of a batch has passed; stop cancels it', async () => {
    const c = makeCommitter();
    c.track(7);
    vi.advanceTimersByTime(COMMIT_INTERVAL_MS - 1);
    c.track(8);
    expect(events).toEqual([]);
    vi.advanceTimersByTime(1);
    vi.useRealTimers();
    await waitUntil(() => events.length === 2, 'the background commit');
    expect(events).toEqual(['image sync', 'committed, durable 2']);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    c.track(9);
    c.stop();
    vi.runAllTimers();
    await c.commit();
    expect(events).toEqual(['image sync', 'committed, durable 2', 'image sync', 'committed, durable 3']);
  });

  it('a failed background commit is logged, unless the disk is already reported as failing', async () => {
    const log = silentLogger();
    const error = vi.spyOn(log, 'error');
    const c = makeCommitter({ log });
    failSync = true;
    c.track(1);
    c.commitInBackground();
    vi.useRealTimers();
    await waitUntil(() => error.mock.calls.length === 1, 'the log line');
    expect(error.mock.calls[0]![1]).toBe('bitmap commit failed');
    faultActive = true;
    c.commitInBackground();
    await waitUntil(() => events.filter((e) => e === 'disk failed EIO').length >= 2, 'the second failure');
    expect(error).toHaveBeenCalledTimes(1);
  });
});
