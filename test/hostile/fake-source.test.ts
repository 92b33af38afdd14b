// A fake S against a real DestAgent: it authenticates properly (it holds the ticket; handshakeAsSource), then
// misbehaves: BLOCK_DATA out of range or for unknown request ids, data parts that are not whole blocks, a DONE
// flag that lies, EXTENTS with runs past the end, RAM pages out of range, guest-stream bytes beyond the credit D
// granted. D must cut it off with the right ERROR code and never write outside the image (its size stays exactly
// the declared size). Before cut-over that is a rollback (D discards everything); after cut-over D keeps the guest
// and waits: a well-behaved S resuming the session then completes the migration with a correct image.
import { randomBytes } from 'node:crypto';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SessionKeys } from '../../src/link/handshake.js';
import { DestRolledBackError } from '../../src/dest/dest-agent.js';
import type { DestGuestMigrator, GuestStreamChannel } from '../../src/guest/migrator.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { BULK_CHUNK_BYTES, CLASS_URGENT, RAM_PAGE_SIZE, RAM_ZERO_PAGE_BIT } from '../../src/protocol/constants.js';
import { encodeBlockData, type Message } from '../../src/protocol/messages.js';
import { FileImage } from '../../src/image/file-image.js';
import { STREAM_CREDIT_WINDOW } from '../../src/link/stream-channel.js';
import { MiB, expectMessage, fakeSource, linkClosed, startDest, waitFor, type DestOnly } from './hostile-harness.js';

const SIZE = 1 * MiB;
const BS = 64 * 1024;

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function dest(extra: Parameters<typeof startDest>[0] = {}): Promise<DestOnly & { src: string }> {
  const d = await startDest(extra);
  cleanups.push(() => d.cleanup());
  const src = join(d.dir, 'src.img');
  generateDemoImage(src, SIZE, 21);
  return { ...d, src };
}

type Inbox = Message[];

/** D's ERROR to the fake S, and the link closed after it. */
async function expectCutOff(link: Awaited<ReturnType<typeof fakeSource>>['link'], inbox: Inbox, code: string): Promise<Extract<Message, { type: 'ERROR' }>> {
  const err = await expectMessage(inbox, 'ERROR');
  expect(err.code, err.message).toBe(code);
  await linkClosed(link);
  return err;
}

/** D's image is exactly the declared size (never extended by a write past the end). */
function expectImageSize(d: DestOnly): void {
  expect(statSync(d.dst).size).toBe(SIZE);
}

/** Authenticate, BEGIN (no guest), cut over; resolves with the link and D's first block request. */
async function toPostcopy(d: DestOnly) {
  const s = await fakeSource(d.endpoint);
  s.link.send({ type: 'BEGIN', guest: null, size: SIZE, blockSize: BS, cookie: 'c00c1e' });
  await expectMessage(s.inbox, 'PREPARED');
  s.link.send({ type: 'DEVICE_STATE', state: {}, ramDigest: '' });
  const fin = await expectMessage(s.inbox, 'FINISH_RESULT');
  expect(fin.running).toBe(true);
  const req = await expectMessage(s.inbox, 'BLOCK_REQ');
  expect(d.dest.phase).toBe('postcopy');
  return { ...s, req };
}

/** After a cut-off past cut-over: D still runs post-copy and takes a resume; an honest S then completes it. */
async function resumeAndComplete(d: DestOnly & { src: string }, keys: SessionKeys): Promise<void> {
  expect(d.dest.phase).toBe('postcopy');
  expect(d.events.named('link').some((e) => e.state === 'down')).toBe(true);
  // D's own answer to the resume says where it stands (no sleep standing in for "it did not give up").
  const { link, hs, inbox } = await fakeSource(d.endpoint, keys);
  expect(hs.resumed).toBe(true);
  expect(hs.destPhase).toBe('postcopy');
  const image = FileImage.open(d.src);
  cleanups.push(() => image.close());
  // A plain honest block server (S's own BlockServer is not what is under test here): whole request, in
  // BULK_CHUNK_BYTES parts, DONE on the last.
  const serve = (req: Extract<Message, { type: 'BLOCK_REQ' }>) => {
    const end = req.offset + req.length;
    for (let at = req.offset; at < end; at += BULK_CHUNK_BYTES) {
      const n = Math.min(BULK_CHUNK_BYTES, end - at);
      link.sendFrame(encodeBlockData(req.id, at, image.readNow(at, n), at + n >= end, req.cls === CLASS_URGENT), req.cls === CLASS_URGENT);
    }
  };
  // Messages that arrived before the handler below are in `inbox`; serve those, then the rest as they come.
  const handle = (m: Message) => {
    if (m.type === 'BLOCK_REQ') serve(m);
    else if (m.type === 'COMPLETE') link.send({ type: 'CONFIRM' });
  };
  for (const m of inbox.splice(0)) handle(m);
  link.setHandler(handle);
  const result = await d.dest.done;
  expect(result.phase).toBe('confirmed');
  expect(await compareImages(d.src, d.dst)).toEqual({ ok: true, sizes: { a: SIZE, b: SIZE } });
}

describe('a fake S that holds the ticket, after cut-over: D cuts it off, keeps the guest, and waits for a resume', () => {
  it('BLOCK_DATA at an offset outside the image: PC_ERR_OUT_OF_RANGE', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'BLOCK_DATA', id: s.req.id, offset: SIZE, data: Buffer.alloc(BS, 0xee), done: true, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
    expectImageSize(d);
  });

  it('BLOCK_DATA running past the end of its request (and of the image): PC_ERR_OUT_OF_RANGE', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    const len = SIZE - s.req.offset + BS;
    s.link.send({ type: 'BLOCK_DATA', id: s.req.id, offset: s.req.offset, data: Buffer.alloc(len, 0xee), done: true, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('BLOCK_ZERO past the end of the image: PC_ERR_OUT_OF_RANGE', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'BLOCK_ZERO', id: s.req.id, offset: s.req.offset, length: SIZE + BS, done: true, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('data for a request id D never issued: PC_ERR_UNKNOWN_REQUEST', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'BLOCK_DATA', id: 0x7ffffff0, offset: 0, data: Buffer.alloc(BS, 0xee), done: true, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_UNKNOWN_REQUEST');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('a data part that is not whole blocks: PC_ERR_MALFORMED, and a resume still completes', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'BLOCK_DATA', id: s.req.id, offset: s.req.offset, data: Buffer.alloc(100, 0xee), done: false, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_MALFORMED');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('a DONE flag that lies (whole request sent, DONE not set): PC_ERR_MALFORMED, and a resume still completes', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'BLOCK_DATA', id: s.req.id, offset: s.req.offset, data: Buffer.alloc(s.req.length, 0xee), done: false, urgent: false });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_MALFORMED');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('EXTENTS with a run past the end: PC_ERR_OUT_OF_RANGE', async () => {
    const d = await dest();
    const s = await toPostcopy(d);
    s.link.send({ type: 'EXTENTS', runs: [{ offset: SIZE - BS, length: 2 * BS }] });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    expectImageSize(d);
    await resumeAndComplete(d, s.hs);
  });

  it('EXTENTS whose first run is valid and second past the end: refused whole, no block of the first run marked zero', async () => {
    // Every block of this source holds data; the streamer asks for one block at a time, so most are not in flight.
    const d = await dest({ streamer: { windowBytes: BS, batchBytes: BS } });
    writeFileSync(d.src, randomBytes(SIZE));
    const s = await toPostcopy(d);
    s.link.send({ type: 'EXTENTS', runs: [{ offset: 8 * BS, length: 4 * BS }, { offset: SIZE - BS, length: 2 * BS }] });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    expectImageSize(d);
    // A refused frame has no effect: blocks 8..11 are still missing and the resumed S's data lands there.
    for (let b = 8; b < 12; b++) expect(d.dest.store!.isPresent(b), `block ${b} present after a refused EXTENTS`).toBe(false);
    await resumeAndComplete(d, s.hs);
  });
});

/** A sim guest's definition (D makes a RAM receiver for it; the guest itself is never started here). */
const simGuest = (ramBytes: number) => ({ persistent: { kind: 'sim', ramBytes, seed: 1 }, transient: {} });

/** D rolled back: done rejects, phase aborted, the image and bitmap are gone. */
async function expectRolledBack(d: DestOnly): Promise<void> {
  await expect(d.dest.done).rejects.toBeInstanceOf(DestRolledBackError);
  expect(d.dest.phase).toBe('aborted');
  await waitFor(() => !existsSync(d.dst), 'the image to be discarded', 2000);
  expect(existsSync(join(d.stateDir, 'present.bitmap'))).toBe(false);
}

describe('a fake S that holds the ticket, before cut-over: D cuts it off and rolls back', () => {
  it.each([
    ['a data page index past the end of RAM', [256], 1],
    ['a zero page index past the end of RAM', [RAM_ZERO_PAGE_BIT | 5000], 0],
    ['a valid page, then one past the end', [3, 0xffff], 2],
  ])('RAM_PAGES with %s: PC_ERR_OUT_OF_RANGE', async (_name, indices, dataPages) => {
    const d = await dest({ createGuest: () => expect.fail('no guest may be created') });
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: simGuest(MiB), size: SIZE, blockSize: BS, cookie: 'c' });
    await expectMessage(s.inbox, 'PREPARED');
    await expectMessage(s.inbox, 'CREDIT');
    expectImageSize(d);
    s.link.send({ type: 'RAM_PAGES', indices, data: Buffer.alloc(dataPages * RAM_PAGE_SIZE, 0x11) });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_OUT_OF_RANGE');
    await expectRolledBack(d);
  });

  it('RAM_PAGES to a D that was told of no guest: PC_ERR_UNEXPECTED', async () => {
    const d = await dest();
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: null, size: SIZE, blockSize: BS, cookie: 'c' });
    await expectMessage(s.inbox, 'PREPARED');
    s.link.send({ type: 'RAM_PAGES', indices: [0], data: Buffer.alloc(RAM_PAGE_SIZE, 1) });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_UNEXPECTED');
    await expectRolledBack(d);
  });

  it('EXTENTS before cut-over: PC_ERR_UNEXPECTED', async () => {
    const d = await dest();
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: null, size: SIZE, blockSize: BS, cookie: 'c' });
    await expectMessage(s.inbox, 'PREPARED');
    s.link.send({ type: 'EXTENTS', runs: [{ offset: SIZE - BS, length: 2 * BS }] });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_UNEXPECTED');
    await expectRolledBack(d);
  });

  it('BLOCK_DATA nobody asked for, before cut-over: PC_ERR_UNKNOWN_REQUEST', async () => {
    const d = await dest();
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: null, size: SIZE, blockSize: BS, cookie: 'c' });
    await expectMessage(s.inbox, 'PREPARED');
    s.link.send({ type: 'BLOCK_DATA', id: 1, offset: SIZE + BS, data: Buffer.alloc(BS, 0xee), done: true, urgent: true });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_UNKNOWN_REQUEST');
    await expectRolledBack(d);
  });

  it('a BEGIN whose geometry D cannot take (block size not a power of two): PC_ERR_MALFORMED, nothing created', async () => {
    const d = await dest();
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: null, size: SIZE, blockSize: 3 * 4096, cookie: 'c' });
    await expectCutOff(s.link, s.inbox, 'PC_ERR_MALFORMED');
    await expectRolledBack(d);
  });

  it('guest-stream bytes beyond the credit D granted: PC_ERR_MALFORMED', async () => {
    // A destination hypervisor that takes the stream but never finishes with a chunk: credit never comes back.
    let took = 0;
    const migrator: DestGuestMigrator = {
      prepare: async () => {},
      receive: (channel: GuestStreamChannel) => {
        channel.onData((data) => {
          took += data.length;
          return new Promise<void>(() => {});
        });
        return new Promise<void>(() => {});
      },
      start: async () => {},
      abort: async () => {},
    };
    const d = await dest({ migrator });
    const s = await fakeSource(d.endpoint);
    s.link.send({ type: 'BEGIN', guest: { persistent: { kind: 'qemu' }, transient: {} }, size: SIZE, blockSize: BS, cookie: 'c' });
    await expectMessage(s.inbox, 'PREPARED');
    const credit = await expectMessage(s.inbox, 'CREDIT');
    expect(credit.bytes).toBe(STREAM_CREDIT_WINDOW);
    const chunk = Buffer.alloc(256 * 1024, 0x51);
    for (let sent = 0; sent < credit.bytes; sent += chunk.length) {
      s.link.send({ type: 'GUEST_STREAM', data: chunk });
      await s.link.waitBulkSpace();
    }
    s.link.send({ type: 'GUEST_STREAM', data: Buffer.from('one byte too many') });
    const err = await expectCutOff(s.link, s.inbox, 'PC_ERR_MALFORMED');
    expect(err.message).toMatch(/beyond granted credit/);
    expect(took).toBe(STREAM_CREDIT_WINDOW);
    await expectRolledBack(d);
  });
});
