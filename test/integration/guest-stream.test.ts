// A hypervisor's own migration stream carried over the migration socket (the QEMU path), with stand-in
// hypervisors on both sides: bytes arrive intact and in order both ways, Finish runs the guest on D, and a
// failure on D before Finish resumes the guest on S.
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { DestGuestMigrator, GuestStreamChannel, SourceGuestMigrator } from '../../src/guest/migrator.js';
import { RolledBackError } from '../../src/source/source-agent.js';
import { compareImages } from '../../src/guest/verify.js';
import { startHarness, type Harness } from './harness.js';

let h: Harness | null = null;
afterEach(async () => {
  await h?.cleanup();
  h = null;
});

const STREAM = randomBytes(5 * 1024 * 1024 + 123);
const RETURN = Buffer.from('return-path: ack of the device state');

class FakeSourceHypervisor implements SourceGuestMigrator {
  readonly definition = { persistent: { kind: 'fake-hv', name: 'vm1' }, transient: { pid: 1 } };
  state: 'running' | 'paused' | 'quit' = 'running';
  returned = Buffer.alloc(0);
  async transfer(ch: GuestStreamChannel): Promise<{ pausedAt: number }> {
    ch.onData((d) => {
      this.returned = Buffer.concat([this.returned, d]);
    });
    for (let at = 0; at < STREAM.length; at += 100_000) await ch.write(STREAM.subarray(at, at + 100_000));
    this.state = 'paused';
    const pausedAt = Date.now();
    ch.end();
    await ch.ended; // the destination's return path says it has it all
    return { pausedAt };
  }
  async resume(): Promise<void> {
    this.state = 'running';
  }
  async shutdown(): Promise<void> {
    this.state = 'quit';
  }
}

class FakeDestHypervisor implements DestGuestMigrator {
  state: 'none' | 'incoming' | 'loaded' | 'running' | 'killed' = 'none';
  uris: string[] = [];
  constructor(readonly failLoad = false) {}
  async prepare(_def: unknown, uris: string[]): Promise<void> {
    this.uris = uris;
    this.state = 'incoming';
  }
  async receive(ch: GuestStreamChannel): Promise<void> {
    const hash = createHash('sha256');
    let n = 0;
    ch.onData(async (d) => {
      hash.update(d);
      n += d.length;
      await new Promise((r) => setImmediate(r)); // a slow consumer: credit must hold the sender back
    });
    await ch.ended;
    if (this.failLoad) throw new Error('incoming migration failed to load');
    expect(n).toBe(STREAM.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(STREAM).digest('hex'));
    await ch.write(RETURN);
    ch.end();
    this.state = 'loaded';
  }
  async start(): Promise<void> {
    this.state = 'running';
  }
  async abort(): Promise<void> {
    this.state = 'killed';
  }
}

describe('hypervisor stream over the migration socket', () => {
  it('carries the stream both ways; D runs the guest; S quits its hypervisor after Confirm', async () => {
    const src = new FakeSourceHypervisor();
    const dst = new FakeDestHypervisor();
    h = await startHarness({ guest: false, sourceMigrator: src, destMigrator: dst });
    const [s, d] = await Promise.all([h.source.run(), h.dest.done]);
    expect(s.phase).toBe('confirmed');
    expect(d.phase).toBe('confirmed');
    expect(dst.state).toBe('running');
    expect(src.state).toBe('quit');
    expect(src.returned.equals(RETURN)).toBe(true);
    expect((await compareImages(h.src, h.dst)).ok).toBe(true);
  });

  it('a destination hypervisor that fails to load: D answers not running, kills it, S resumes its guest', async () => {
    const src = new FakeSourceHypervisor();
    const dst = new FakeDestHypervisor(true);
    h = await startHarness({ guest: false, sourceMigrator: src, destMigrator: dst });
    // The source waits for the return path's end, which a failed load never sends: D's failure ends it.
    await expect(h.source.run()).rejects.toBeInstanceOf(RolledBackError);
    await expect(h.dest.done).rejects.toThrow();
    expect(src.state).toBe('running');
    expect(dst.state).toBe('killed');
  });
});
