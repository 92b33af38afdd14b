// readFirstHello, the port's look at a stranger's first frame: for a HELLO split anywhere and followed by anything,
// it yields the HELLO, and the bytes it hands back, unshifted, leave the stream exactly as the peer sent it (nothing
// lost, nothing twice): what the job's own handshake then reads. Anything else first is refused with its code.
import { PassThrough } from 'node:stream';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LinkClosedError, ProtocolError, TimeoutError } from '../../src/common/errors.js';
import { encodeMessage, type Message } from '../../src/protocol/messages.js';
import { readFirstHello } from '../../src/service/first-hello.js';
import { expectError } from '../helpers/errors.js';
import { fcParams } from '../helpers/fc.js';
import { buildFrame, buildHeader, T } from '../helpers/frame-builder.js';
import { controlMessage } from '../helpers/message-arbitraries.js';

/** An in-memory stand-in for the accepted socket (this module only reads it as a stream). */
const fakeSocket = () => new PassThrough() as unknown as Socket & PassThrough;

/** Everything left readable on `s` until the writer ends it. */
function drain(s: PassThrough): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.resume();
  return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks))));
}

const hellos = controlMessage.filter((m): m is Extract<Message, { type: 'HELLO' }> => m.type === 'HELLO' && Buffer.concat(encodeMessage(m)).length <= 4096);

describe('readFirstHello', () => {
  it('a HELLO split anywhere, with anything after it: the HELLO, and after unshift the stream is as sent', async () => {
    await fc.assert(
      fc.asyncProperty(hellos, fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 6 }), async (hello, after, cutsRaw) => {
        const all = Buffer.concat([...encodeMessage(hello), Buffer.from(after)]);
        const cuts = [...new Set(cutsRaw.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
        const s = fakeSocket();
        const got = readFirstHello(s, 5000);
        let at = 0;
        for (const cut of [...cuts, all.length]) {
          s.write(all.subarray(at, cut));
          at = cut;
        }
        s.end();
        const { hello: h, bytes } = await got;
        expect(h).toEqual(JSON.parse(JSON.stringify(hello)));
        s.unshift(bytes);
        expect((await drain(s)).equals(all)).toBe(true);
      }),
      fcParams(),
    );
  });

  it('refuses what is not a HELLO first, an oversized frame, silence and a peer that leaves', async () => {
    const cases: Array<[Buffer, typeof ProtocolError, 'PC_ERR_UNEXPECTED' | 'PC_ERR_BAD_MAGIC' | 'PC_ERR_FRAME_TOO_LARGE' | 'PC_ERR_CHECKSUM']> = [
      [Buffer.concat(encodeMessage({ type: 'AUTH', proof: 'ab' })), ProtocolError, 'PC_ERR_UNEXPECTED'],
      [Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), ProtocolError, 'PC_ERR_BAD_MAGIC'],
      [buildHeader({ type: T.HELLO, flags: 1, length: 4097 }), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE'],
      [buildFrame({ type: T.HELLO, flags: 1, payload: Buffer.from('{}'), crc: 1234 }), ProtocolError, 'PC_ERR_CHECKSUM'],
    ];
    for (const [bytes, cls, code] of cases) {
      const s = fakeSocket();
      const got = readFirstHello(s, 5000);
      s.write(bytes!);
      expectError(await got.catch((e: unknown) => e), cls, code);
    }
    const silent = fakeSocket();
    expectError(await readFirstHello(silent, 30).catch((e: unknown) => e), TimeoutError, 'PC_ERR_TIMEOUT');
    const leaving = fakeSocket();
    const left = readFirstHello(leaving, 5000);
    leaving.end();
    leaving.resume();
    expectError(await left.catch((e: unknown) => e), LinkClosedError, 'PC_ERR_LINK_CLOSED');
  });
});
