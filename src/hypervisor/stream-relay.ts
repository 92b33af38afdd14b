// Carries QEMU's migration socket over a GuestStreamChannel, both ways, with backpressure each way: the socket
// is paused while the channel has not taken a chunk, and the channel's handler waits for the socket to drain.
import type { Socket } from 'node:net';
import type { GuestStreamChannel } from '../common/guest-stream-channel.js';
import { deferred } from '../common/deferred.js';

export interface RelayStats {
  /** Bytes read from the local QEMU socket and sent over the channel. */
  bytesOut: number;
  /** Bytes from the channel written to the local QEMU socket. */
  bytesIn: number;
}

export interface Relay {
  readonly stats: RelayStats;
  /** Settles when the local socket has closed (resolves) or either side failed (rejects). */
  readonly done: Promise<void>;
  destroy(err?: Error): void;
}

/**
 * `endOnClose`: pass QEMU's closing of its socket on as the end of this direction. The destination turns it
 * off: its QEMU closing early means it failed, and D's abort, not an orderly end, must tell S why.
 */
export function relay(socket: Socket, channel: GuestStreamChannel, opts: { endOnClose: boolean } = { endOnClose: true }): Relay {
  const stats: RelayStats = { bytesOut: 0, bytesIn: 0 };
  const done = deferred<void>();
  let failed: Error | null = null;
  const fail = (err: Error) => {
    if (failed) return;
    failed = err;
    socket.destroy();
    done.reject(err);
  };

  socket.on('data', (chunk: Buffer) => {
    stats.bytesOut += chunk.length;
    // One chunk at a time: the channel's write resolves within the peer's credit.
    socket.pause();
    channel.write(chunk).then(
      () => {
        if (!failed) socket.resume();
      },
      (e: unknown) => fail(e instanceof Error ? e : new Error(String(e))),
    );
  });
  // QEMU closed its side (or a half-close): no more bytes this way.
  if (opts.endOnClose) socket.on('end', () => channel.end());
  socket.on('error', (e) => fail(e));
  socket.on('close', () => {
    if (opts.endOnClose) channel.end();
    if (!failed) done.resolve();
  });

  // One wait for 'drain' shared by every chunk written meanwhile (frames arrive without waiting for each other).
  let draining: Promise<void> | null = null;
  channel.onData((data) => {
    if (failed || socket.destroyed) return;
    stats.bytesIn += data.length;
    if (socket.write(data) && !draining) return;
    // Hold the peer's credit until QEMU has taken these bytes.
    draining ??= new Promise<void>((resolve) => {
      const settle = () => {
        socket.off('drain', settle);
        socket.off('close', settle);
        draining = null;
        resolve();
      };
      socket.once('drain', settle);
      socket.once('close', settle);
    });
    return draining;
  });
  // The peer ended its direction: pass EOF on to QEMU (it reads EOF as "stream over").
  channel.ended.then(
    () => {
      if (!socket.destroyed && socket.writable) socket.end();
    },
    (e: unknown) => {
      // The link closed: QEMU's side of the stream is broken.
      if (!socket.destroyed) fail(e instanceof Error ? e : new Error(String(e)));
    },
  );
  // A rejected `done` nobody awaits must not crash the process.
  done.promise.catch(() => {});
  return { stats, done: done.promise, destroy: (err?: Error) => fail(err ?? new Error('relay destroyed')) };
}
