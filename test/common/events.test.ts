// The events file is for orchestrators; losing it (a full disk) must never stop a migration.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { JsonLinesEvents } from '../../src/common/events.js';

describe('JsonLinesEvents', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('on a full disk (/dev/full) emit does not throw and says so once per episode', () => {
    const said: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      said.push(String(chunk));
      return true;
    });
    const events = new JsonLinesEvents('/dev/full', 'dest');
    for (let i = 0; i < 100; i++) events.emit('progress', { i });
    events.close();
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/cannot write to the events file \(ENOSPC\)/);
  });
});
