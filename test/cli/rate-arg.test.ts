// --max-bandwidth RATE: a size per second in binary units, with or without a trailing /s.
import { describe, expect, it } from 'vitest';
import { parseRate } from '../../src/cli/sizes.js';
import { UsageError } from '../../src/common/errors.js';

describe('parseRate', () => {
  it('reads a size per second, /s optional', () => {
    expect(parseRate('50M', '--max-bandwidth')).toBe(50 * 2 ** 20);
    expect(parseRate('50M/s', '--max-bandwidth')).toBe(50 * 2 ** 20);
    expect(parseRate('1.5GiB/s', '--max-bandwidth')).toBe(1.5 * 2 ** 30);
    expect(parseRate('512K/S', '--max-bandwidth')).toBe(512 * 1024);
    expect(parseRate('1000', '--max-bandwidth')).toBe(1000);
  });

  it('refuses what is not a rate, naming the option', () => {
    for (const bad of ['', '0', '-5M', 'fast', '5M/min', '5M//s']) {
      expect(() => parseRate(bad, '--max-bandwidth')).toThrow(UsageError);
      expect(() => parseRate(bad, '--max-bandwidth')).toThrow(/--max-bandwidth/);
    }
  });
});
