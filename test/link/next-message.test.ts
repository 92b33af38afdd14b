// nextMessage: one awaited message with a deadline; ERROR frames, unexpected messages, timeouts and
// closes each reject with their own class and code.
import { describe, expect, it } from 'vitest';
import { LinkClosedError, ProtocolError, TimeoutError } from '../../src/common/errors.js';
import { nextMessage } from '../../src/link/next-message.js';
import { expectError } from '../helpers/errors.js';
import { autoCleanup, closed, collect, linkPair, turns, waitFor } from '../helpers/link-harness.js';

autoCleanup();

describe('nextMessage', () => {
  it('resolves with the next accepted message, then holds later ones for the next call, in order', async () => {
    const { a, b } = linkPair();
    a.send({ type: 'PREPARED', cookie: 'c1' });
    a.send({ type: 'FINISH_RESULT', running: true });
    a.send({ type: 'COMPLETE', blocks: 1, pristineBlocks: 0 });
    expect(await nextMessage(b, ['PREPARED'], 1000)).toEqual({ type: 'PREPARED', cookie: 'c1' });
    await turns(); // the later two have arrived by now, with no one asking for them
    expect(await nextMessage(b, ['FINISH_RESULT', 'ABORT'], 1000)).toEqual({ type: 'FINISH_RESULT', running: true });
    const rest = collect(b);
    await waitFor(() => rest.length === 1, 'COMPLETE');
    expect(rest[0]!.type).toBe('COMPLETE');
  });

  it('an ERROR frame from the peer rejects with ProtocolError PC_ERR_PEER naming the peer code', async () => {
    const { a, b } = linkPair();
    const p = nextMessage(b, ['PREPARED'], 1000);
    a.send({ type: 'ERROR', code: 'PC_ERR_BACKEND', message: 'disk gone' });
    const err = expectError(await p.catch((e: unknown) => e), ProtocolError, 'PC_ERR_PEER');
    expect(err.message).toContain('PC_ERR_BACKEND');
    expect(err.message).toContain('disk gone');
  });

  it('an unexpected message rejects with PC_ERR_UNEXPECTED and cuts the peer off with an ERROR frame', async () => {
    const { a, b } = linkPair();
    const atA = collect(a);
    const p = nextMessage(b, ['PREPARED'], 1000);
    a.send({ type: 'CONFIRM' });
    expectError(await p.catch((e: unknown) => e), ProtocolError, 'PC_ERR_UNEXPECTED');
    expectError(await closed(b), ProtocolError, 'PC_ERR_UNEXPECTED');
    await waitFor(() => atA.length === 1, 'ERROR frame');
    expect(atA[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_UNEXPECTED' });
  });

  it('times out with TimeoutError PC_ERR_TIMEOUT; the link stays open and a late message is held', async () => {
    const { a, b } = linkPair();
    const t0 = Date.now();
    expectError(await nextMessage(b, ['PREPARED'], 60).catch((e: unknown) => e), TimeoutError, 'PC_ERR_TIMEOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    expect(b.closed).toBe(false);
    a.send({ type: 'PREPARED', cookie: 'late' });
    expect(await nextMessage(b, ['PREPARED'], 1000)).toEqual({ type: 'PREPARED', cookie: 'late' });
  });

  it('the link closing rejects with its close error; an already closed link rejects at once', async () => {
    const { a, b } = linkPair();
    const p = nextMessage(b, ['PREPARED'], 1000);
    a.close();
    expectError(await p.catch((e: unknown) => e), LinkClosedError, 'PC_ERR_LINK_CLOSED');
    expectError(await nextMessage(b, ['PREPARED'], 1000).catch((e: unknown) => e), LinkClosedError, 'PC_ERR_LINK_CLOSED');
    const c = linkPair();
    c.a.close(new ProtocolError('PC_ERR_DIGEST', 'x'));
    expectError(await nextMessage(c.a, ['PREPARED'], 1000).catch((e: unknown) => e), ProtocolError, 'PC_ERR_DIGEST');
  });
});
