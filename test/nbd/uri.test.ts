// parseNbdUri: the nbd:// and nbd+unix:// forms qemu and libnbd accept, and clear errors otherwise.
import { describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { formatNbdUri, parseNbdUri } from '../../src/nbd/client.js';

describe('parseNbdUri', () => {
  const good: [string, ReturnType<typeof parseNbdUri>][] = [
    ['nbd://127.0.0.1:10810/disk', { address: { host: '127.0.0.1', port: 10810 }, exportName: 'disk' }],
    ['nbd://example.org/disk', { address: { host: 'example.org', port: 10809 }, exportName: 'disk' }],
    ['nbd://host', { address: { host: 'host', port: 10809 }, exportName: '' }],
    ['nbd://host/', { address: { host: 'host', port: 10809 }, exportName: '' }],
    ['nbd://host:1/a%20b/c', { address: { host: 'host', port: 1 }, exportName: 'a b/c' }],
    ['nbd://[::1]:10809/x', { address: { host: '::1', port: 10809 }, exportName: 'x' }],
    ['nbd+unix:///disk?socket=/tmp/nbd.sock', { address: { socketPath: '/tmp/nbd.sock' }, exportName: 'disk' }],
    ['nbd+unix://?socket=/run/s', { address: { socketPath: '/run/s' }, exportName: '' }],
    ['nbd+unix:///?socket=%2Ftmp%2Fa%20b', { address: { socketPath: '/tmp/a b' }, exportName: '' }],
  ];
  for (const [uri, expected] of good) {
    it(uri, () => expect(parseNbdUri(uri)).toEqual(expected));
  }

  const bad = [
    'disk.img',
    'http://host/disk',
    'nbds://host/disk',
    'nbd://host:99999/disk',
    'nbd:///disk',
    'nbd://user:pw@host/disk',
    'nbd://host/disk?socket=/x',
    'nbd+unix:///disk',
    'nbd+unix://host/disk?socket=/x',
    'nbd://host/%E0%A4%A',
  ];
  for (const uri of bad) {
    it(`rejects ${uri}`, () => {
      const err = (() => {
        try {
          parseNbdUri(uri);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(NbdError);
      expect((err as NbdError).code).toBe('NBD_ERR_URI');
    });
  }

  it('formatNbdUri round-trips', () => {
    for (const [uri] of good) {
      const p = parseNbdUri(uri);
      expect(parseNbdUri(formatNbdUri(p.address, p.exportName))).toEqual(p);
    }
  });
});
