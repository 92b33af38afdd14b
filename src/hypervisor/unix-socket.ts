// Connecting to a Unix socket QEMU serves (QMP, the incoming migration socket), as a promise.
import { connect, type Socket } from 'node:net';

/** Resolves with the connected socket, or rejects with the connect error (ENOENT, ECONNREFUSED: callers may retry). */
export function connectUnixSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}
