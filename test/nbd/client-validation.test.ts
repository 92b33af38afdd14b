// NbdClient against a scripted misbehaving server: negotiation fallbacks (no SR, no meta context,
// GO unsupported), reply validation (unknown cookie, chunks outside the request, wrong context,
// overlaps) that hard-closes, and the legal oddities it must accept (interleaving, short status).
import { afterEach, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { FAKE_CONTEXT_ID, FakeNbdServer, type FakeScript } from './helpers/fake-server.js';
import { patternBytes } from './helpers/memory-block-device.js';

const DONE = C.NBD_REPLY_FLAG_DONE;
let servers: FakeNbdServer[] = [];
let clients: NbdClient[] = [];

async function setup(script: FakeScript): Promise<{ server: FakeNbdServer; client: NbdClient }> {
  const server = await FakeNbdServer.start(script);
  servers.push(server);
  const client = await NbdClient.connect(server.uri);
  clients.push(client);
  return { server, client };
}

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  clients = [];
});

/** Answer READs with one OFFSET_DATA chunk of the pattern. */
function patternReads(req: codec.NbdRequest, conn: { send(...b: Buffer[]): void }): void {
  if (req.command === C.NBD_CMD_READ) {
    conn.send(codec.encodeOffsetDataHeader(req.cookie, DONE, req.offset, req.length), patternBytes(req.offset, req.length));
  } else conn.send(codec.encodeSimpleReply(req.cookie, 0));
}

describe('negotiation fallbacks', () => {
  it('GO answered ERR_UNSUP: falls back to EXPORT_NAME', async () => {
    const { server, client } = await setup({
      onOption: (o) => (o === C.NBD_OPT_GO ? { replies: [codec.encodeOptionError(o, C.NBD_REP_ERR_UNSUP)] } : undefined),
      onRequest: patternReads,
    });
    expect(client.negotiatedVia).toBe('EXPORT_NAME');
    expect(server.options).toEqual([C.NBD_OPT_STRUCTURED_REPLY, C.NBD_OPT_SET_META_CONTEXT, C.NBD_OPT_GO, C.NBD_OPT_EXPORT_NAME]);
    expect((await client.read(100, 50)).equals(patternBytes(100, 50))).toBe(true);
  });

  it('SR refused: simple replies; meta context not even asked', async () => {
    const { server, client } = await setup({
      onOption: (o) => (o === C.NBD_OPT_STRUCTURED_REPLY ? { replies: [codec.encodeOptionError(o, C.NBD_REP_ERR_POLICY, 'no')] } : undefined),
      onRequest: (req, conn) => conn.send(codec.encodeSimpleReply(req.cookie, 0), patternBytes(req.offset, req.length)),
    });
    expect(client.structuredReplies).toBe(false);
    expect(server.options).not.toContain(C.NBD_OPT_SET_META_CONTEXT);
    expect((await client.read(0, 4096)).equals(patternBytes(0, 4096))).toBe(true);
  });

  it('no meta context selected: everything is data, no BLOCK_STATUS sent', async () => {
    const { server, client } = await setup({
      onOption: (o) => (o === C.NBD_OPT_SET_META_CONTEXT ? { replies: [codec.encodeAck(o)] } : undefined),
    });
    expect(client.baseAllocation).toBe(false);
    expect(await client.blockStatus(0, 1000)).toEqual([{ offset: 0, length: 1000, flags: 0 }]);
    expect(server.requests).toEqual([]);
  });

  it('GO refused otherwise (ERR_UNKNOWN) is a clear connect error', async () => {
    const server = await FakeNbdServer.start({
      onOption: (o) => (o === C.NBD_OPT_GO ? { replies: [codec.encodeOptionError(o, C.NBD_REP_ERR_UNKNOWN, 'who?')] } : undefined),
    });
    servers.push(server);
    await expect(NbdClient.connect(server.uri)).rejects.toMatchObject({ code: 'NBD_ERR_OPTION', message: expect.stringMatching(/ERR_UNKNOWN \(who\?\)/) });
  });

  it('malformed INFO_EXPORT (wrong length) fails the handshake', async () => {
    const server = await FakeNbdServer.start({
      onOption: (o) =>
        o === C.NBD_OPT_GO
          ? { replies: [codec.encodeOptionReply(o, C.NBD_REP_INFO, Buffer.alloc(13)), codec.encodeAck(o)] }
          : undefined,
    });
    servers.push(server);
    await expect(NbdClient.connect(server.uri)).rejects.toMatchObject({ code: 'NBD_ERR_HANDSHAKE' });
  });

  it('impossible block sizes are ignored (like libnbd)', async () => {
    const { client } = await setup({
      onOption: (o) =>
        o === C.NBD_OPT_GO
          ? {
              replies: [
                codec.encodeInfoBlockSize(o, { minimum: 3, preferred: 4096, maximum: 1 << 20 }),
                codec.encodeInfoExport(o, 1 << 20, C.NBD_FLAG_HAS_FLAGS),
                codec.encodeAck(o),
              ],
              enter: true,
            }
          : undefined,
    });
    expect(client.blockSizes).toBeUndefined();
  });

  it('a connect timeout when the server never greets', async () => {
    const net = await import('node:net');
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as import('node:net').AddressInfo).port;
    await expect(NbdClient.connect({ host: '127.0.0.1', port }, 'x', { connectTimeoutMs: 200 })).rejects.toMatchObject({
      code: 'NBD_ERR_HANDSHAKE',
    });
    await new Promise<void>((r) => silent.close(() => r()));
  });
});

describe('reply validation', () => {
  async function brokenReply(reply: (req: codec.NbdRequest) => Buffer[], op: (c: NbdClient) => Promise<unknown> = (c) => c.read(4096, 4096)): Promise<unknown> {
    const { client } = await setup({ onRequest: (req, conn) => conn.send(...reply(req)) });
    const err = await op(client).catch((e: unknown) => e);
    expect(client.isOpen).toBe(false);
    return err;
  }

  it('unknown cookie: hard close', async () => {
    const err = await brokenReply((req) => [codec.encodeSimpleReply(req.cookie + 1000n, 0)]);
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED', cause: { code: 'NBD_ERR_UNKNOWN_COOKIE' } });
  });

  it('data chunk outside the request: hard close', async () => {
    const err = await brokenReply((req) => [codec.encodeOffsetDataHeader(req.cookie, DONE, 0, 4096), Buffer.alloc(4096)]);
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED', cause: { code: 'NBD_ERR_MALFORMED' } });
  });

  it('overlapping chunks: hard close', async () => {
    const err = await brokenReply((req) => [
      codec.encodeOffsetDataHeader(req.cookie, 0, 4096, 4096), Buffer.alloc(4096),
      codec.encodeOffsetHole(req.cookie, DONE, 4096, 512),
    ]);
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED', cause: { message: expect.stringMatching(/overlapping/) } });
  });

  it('DONE before every byte is covered: hard close', async () => {
    const err = await brokenReply((req) => [codec.encodeOffsetHole(req.cookie, DONE, 4096, 512)]);
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED', cause: { code: 'NBD_ERR_MALFORMED' } });
  });

  it('block status for a context we did not negotiate: hard close', async () => {
    const err = await brokenReply(
      (req) => [codec.encodeBlockStatusChunk(req.cookie, DONE, FAKE_CONTEXT_ID + 1, [{ length: 4096, flags: 0 }])],
      (c) => c.blockStatus(0, 4096),
    );
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED', cause: { code: 'NBD_ERR_MALFORMED' } });
  });

  it('a chunk type wrong for the command (data for a WRITE): hard close', async () => {
    const err = await brokenReply(
      (req) => [codec.encodeOffsetDataHeader(req.cookie, DONE, req.offset, 1), Buffer.alloc(1)],
      (c) => c.write(0, Buffer.alloc(1)),
    );
    expect(err).toMatchObject({ code: 'NBD_ERR_CLOSED' });
  });

  it('an error chunk fails only its request', async () => {
    let n = 0;
    const { client } = await setup({
      onRequest: (req, conn) => {
        if (n++ === 0) conn.send(codec.encodeErrorChunk(req.cookie, DONE, C.NBD_EIO, 'disk on fire'));
        else patternReads(req, conn);
      },
    });
    await expect(client.read(0, 512)).rejects.toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EIO, message: expect.stringMatching(/disk on fire/) });
    expect((await client.read(0, 512)).equals(patternBytes(0, 512))).toBe(true);
  });

  it('interleaved, out-of-order chunks of several reads are assembled (holes as zeroes)', async () => {
    const held: codec.NbdRequest[] = [];
    const { client } = await setup({
      onRequest: (req, conn) => {
        held.push(req);
        if (held.length < 3) return;
        // Answer all three at once: second halves first, chunks of different requests interleaved.
        const parts: Buffer[] = [];
        for (const r of held) {
          const half = r.length / 2;
          parts.push(codec.encodeOffsetHole(r.cookie, 0, r.offset + half, half));
        }
        for (const r of [...held].reverse()) {
          const half = r.length / 2;
          parts.push(codec.encodeOffsetDataHeader(r.cookie, DONE, r.offset, half), patternBytes(r.offset, half));
        }
        conn.send(...parts);
      },
    });
    const reads = await Promise.all([client.read(0, 1024), client.read(8192, 2048), client.read(65536, 512)]);
    for (const [buf, off, len] of [[reads[0]!, 0, 1024], [reads[1]!, 8192, 2048], [reads[2]!, 65536, 512]] as const) {
      expect(buf.subarray(0, len / 2).equals(patternBytes(off, len / 2))).toBe(true);
      expect(buf.subarray(len / 2).every((b) => b === 0)).toBe(true);
    }
  });

  it('short BLOCK_STATUS answers are re-asked from the first uncovered offset; overrun is trimmed', async () => {
    const { server, client } = await setup({
      onRequest: (req, conn) => {
        // One 4 KiB extent per answer, alternating data and zero; the last one overruns.
        const flags = (req.offset / 4096) % 2 === 0 ? 0 : C.NBD_STATE_ZERO;
        conn.send(codec.encodeBlockStatusChunk(req.cookie, DONE, FAKE_CONTEXT_ID, [{ length: 4096, flags }]));
      },
    });
    const ext = await client.blockStatus(0, 3 * 4096 + 100);
    expect(ext).toEqual([
      { offset: 0, length: 4096, flags: 0 },
      { offset: 4096, length: 4096, flags: C.NBD_STATE_ZERO },
      { offset: 8192, length: 4096, flags: 0 },
      { offset: 12288, length: 100, flags: C.NBD_STATE_ZERO },
    ]);
    expect(server.requests.map((r) => [r.offset, r.flags & C.NBD_CMD_FLAG_REQ_ONE])).toEqual([
      [0, 0],
      [4096, 0],
      [8192, 0],
      [12288, 0],
    ]);
  });

  it('close() gives up on requests the server never answers after drainTimeoutMs', async () => {
    const server = await FakeNbdServer.start({ onRequest: () => undefined });
    servers.push(server);
    const client = await NbdClient.connect(server.uri, undefined, { drainTimeoutMs: 100 });
    const read = client.read(0, 10).catch((e: unknown) => e);
    await client.close();
    expect(await read).toMatchObject({ code: 'NBD_ERR_CLOSED' });
    expect(client.state).toBe('failed');
  });

  it('the server dropping the connection fails everything in flight with NBD_ERR_CLOSED', async () => {
    const { client } = await setup({ onRequest: (_req, conn) => conn.close() });
    const results = await Promise.allSettled([client.read(0, 10), client.read(10, 10)]);
    for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'NBD_ERR_CLOSED' } });
    expect(client.failure?.code).toBe('NBD_ERR_CLOSED');
  });
});
