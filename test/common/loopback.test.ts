// Which listening addresses count as this host only (a plain-text server may bind those alone).
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { isLoopback, onlyLoopback } from '../../src/common/loopback.js';

describe('loopback', () => {
  it('knows 127/8, ::1 and IPv4-mapped 127/8; nothing else, wildcards included', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::FFFF:127.0.0.1']) expect(isLoopback(a), a).toBe(true);
    for (const a of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', '::ffff:10.0.0.1', 'localhost']) expect(isLoopback(a), a).toBe(false);
  });

  it('resolves a name: localhost is loopback only; a name that does not resolve is a UsageError naming the flag', async () => {
    expect(await onlyLoopback('localhost', '--x')).toBe(true);
    expect(await onlyLoopback('0.0.0.0', '--x')).toBe(false);
    const err = await onlyLoopback('no-such-host.invalid', '--metrics-listen').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/--metrics-listen no-such-host\.invalid: cannot resolve it/);
  });
});
