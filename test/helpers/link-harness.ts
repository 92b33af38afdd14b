// Helpers for link tests: Links over an in-memory pair, a message collector, and polling waits.
import { afterEach } from 'vitest';
import type { PostcopyError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { Link, type LinkOptions } from '../../src/link/link.js';
import type { Message } from '../../src/protocol/messages.js';
import type { Duplex } from 'node:stream';
import { duplexPair, type DuplexPairOptions } from './duplex-pair.js';
import { turns, waitUntil } from './wait.js';

export { turns };

const live = new Set<{ destroy(): void }>();

/** Register cleanup: every link or socket made through this file is destroyed after each test. */
export function autoCleanup(): void {
  afterEach(() => {
    for (const x of live) x.destroy();
    live.clear();
  });
}

export function track<T extends { destroy(): void }>(x: T): T {
  live.add(x);
  return x;
}

export function newLink(socket: Duplex, opts: Partial<LinkOptions> = {}): Link {
  return track(new Link(socket, { log: silentLogger(), ...opts }));
}

/** Two Links over an in-memory pair. */
export function linkPair(a: Partial<LinkOptions> = {}, b: Partial<LinkOptions> = {}, pair: DuplexPairOptions = {}) {
  const [sa, sb] = duplexPair(pair);
  track(sa);
  track(sb);
  return { a: newLink(sa, a), b: newLink(sb, b), sa, sb };
}

/** One Link and the raw other end (for speaking bytes at it). */
export function linkAndRaw(opts: Partial<LinkOptions> = {}, pair: DuplexPairOptions = {}) {
  const [sa, sb] = duplexPair(pair);
  track(sa);
  track(sb);
  return { link: newLink(sa, opts), raw: sb };
}

/** Set a handler on `link` that records every message. */
export function collect(link: Link): Message[] {
  const got: Message[] = [];
  link.setHandler((m) => void got.push(m));
  return got;
}

/** Resolves with the error of the link's 'close' event. */
export function closed(link: Link): Promise<PostcopyError | undefined> {
  if (link.closed) return Promise.resolve(link.closeError);
  return new Promise((resolve) => link.once('close', resolve));
}

/** Poll until `cond` holds (or fail after `timeoutMs`). */

/** waitUntil at the link tests' pace: short timeouts, tight polling. */
export const waitFor = (cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> => waitUntil(cond, what, timeoutMs, 2);

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Whether a promise has settled within `n` event-loop turns (at least one). */
export async function settled(p: Promise<unknown>, n = 20): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await turns(Math.max(1, n));
  return done;
}
