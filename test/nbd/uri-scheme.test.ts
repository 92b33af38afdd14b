// Telling an NBD URI from a file path in --image / --fallback: the one rule S's and D's command lines share.
import { describe, expect, it } from 'vitest';
import { isNbdUri, withoutNbdScheme } from '../../src/nbd/uri.js';

describe('isNbdUri / withoutNbdScheme', () => {
  it('nbd:// and nbd+unix:// are URIs; paths, other schemes and look-alikes are not', () => {
    for (const u of ['nbd://h:10809/disk', 'nbd://h/x', 'nbd+unix:///disk?socket=/run/s.sock']) expect(isNbdUri(u), u).toBe(true);
    for (const p of ['/var/lib/img.raw', 'img.raw', './nbd://x', 'nbd:/x', 'NBD://h/x', 'nbds://h/x', 'nbd+tcp://h/x', 'file:///x', ' nbd://h/x']) {
      expect(isNbdUri(p), p).toBe(false);
    }
  });

  it('withoutNbdScheme drops only a leading nbd:// or nbd+unix://', () => {
    expect(withoutNbdScheme('nbd://h:10809/disk')).toBe('h:10809/disk');
    expect(withoutNbdScheme('nbd+unix:///disk?socket=/s')).toBe('/disk?socket=/s');
    expect(withoutNbdScheme('/path/nbd://x')).toBe('/path/nbd://x');
  });
});
