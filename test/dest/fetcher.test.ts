// The fetcher on its own: numbered BLOCK_REQs on a stand-in link, replies checked against the request, re-issue
// after a reconnect asking only for what is missing, BLOCK_ERR retries with backoff, the fallback source.
// Timers (retry backoff, the fallback's wait, the log rate limit) run on vitest's fake clock: the test moves time.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { pino, type Logger } from 'pino';
import { Fetcher, type FallbackSource, type FetchSink } from '../../src/dest/fetcher.js';
import { BackendError, ProtocolError, type PostcopyError } from '../../src/common/errors.js';
import { CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import type { MessageOf } from '../../src/protocol/messages.js';
import type { Link } from '../../src/link/link.js';
import { deferred, type Deferred } from '../../src/common/deferred.js';
import { expectError, expectThrows } from '../helpers/errors.js';

const KIB = 1024;
type Req = MessageOf<'BLOCK_REQ'>;

/** The part of a Link the fetcher uses: send, batch, closed. Records each request and whether it went in a batch. */
class FakeLink {
  closed = false;
  sent: Array<Req & { batched: boolean }> = [];
  #inBatch = false;
  send(msg: Req): void {
    if (this.closed) throw new Error('send on a closed link');
    this.sent.push({ ...msg, batched: this.#inBatch });
  }
  batch(fn: () => void): void {
    this.#inBatch = true;
    try {
      fn();
    } finally {
      this.#inBatch = false;
    }
  }
  get last(): Req {
    return this.sent[this.sent.length - 1]!;
  }
  asLink(): Link {
    return this as unknown as Link;
  }
}

/** A sink that records what it was told, in order. */
class Recorder implements FetchSink {
  events: string[] = [];
  data: Array<{ offset: number; data: Buffer }> = [];
  errors: PostcopyError[] = [];
  onData(offset: number, data: Buffer): void {
    this.events.push(`data ${offset}+${data.length}`);
    this.data.push({ offset, data: Buffer.from(data) });
  }
  onZero(offset: number, length: number): void {
    this.events.push(`zero ${offset}+${length}`);
  }
  onDone(): void {
    this.events.push('done');
  }
  onError(err: PostcopyError): void {
    this.events.push(`error ${err.code}`);
    this.errors.push(err);
  }
}

/** A pino logger whose records land in an array (the operator's view of what happened). */
function capturingLogger(): { log: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'trace' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, records };
}

const dataMsg = (req: Req, offset: number, data: Buffer, done: boolean): MessageOf<'BLOCK_DATA'> => ({
  type: 'BLOCK_DATA',
  id: req.id,
  offset,
  data,
  done,
  urgent: req.cls === CLASS_URGENT,
});
const zeroMsg = (req: Req, offset: number, length: number, done: boolean): MessageOf<'BLOCK_ZERO'> => ({
  type: 'BLOCK_ZERO',
  id: req.id,
  offset,
  length,
  done,
  urgent: req.cls === CLASS_URGENT,
});
const errMsg = (req: Req, errno = 5, message = 'Input/output error'): MessageOf<'BLOCK_ERR'> => ({ type: 'BLOCK_ERR', id: req.id, errno, message });
const pattern = (offset: number, length: number) => {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = ((offset + i) * 7 + 1) & 0xff || 1;
  return b;
};

let logged: ReturnType<typeof capturingLogger>;
let fetcher: Fetcher;
let link: FakeLink;
let settled: number;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] });
  logged = capturingLogger();
  fetcher = new Fetcher(logged.log);
  settled = 0;
  fetcher.onSettled = () => settled++;
  link = new FakeLink();
  fetcher.attach(link.asLink());
});
afterEach(() => {
  vi.useRealTimers();
});

const msgs = (level?: number) => logged.records.filter((r) => level === undefined || r.level === level).map((r) => r.msg as string);

describe('requests and the link', () => {
  it('sends one numbered BLOCK_REQ per request, with distinct positive ids, and counts what is in flight by class', () => {
    const sinks = [new Recorder(), new Recorder(), new Recorder()];
    fetcher.request(0, 64 * KIB, CLASS_BULK, sinks[0]!);
    fetcher.request(128 * KIB, 4 * KIB, CLASS_URGENT, sinks[1]!);
    fetcher.request(256 * KIB, 32 * KIB, CLASS_BULK, sinks[2]!);
    expect(link.sent.map(({ offset, length, cls }) => ({ offset, length, cls }))).toEqual([
      { offset: 0, length: 64 * KIB, cls: CLASS_BULK },
      { offset: 128 * KIB, length: 4 * KIB, cls: CLASS_URGENT },
      { offset: 256 * KIB, length: 32 * KIB, cls: CLASS_BULK },
    ]);
    expect(link.sent.every((r) => r.type === 'BLOCK_REQ')).toBe(true);
    const ids = link.sent.map((r) => r.id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id).toBeGreaterThan(0);
    expect(fetcher.bulkBytesInFlight).toBe(96 * KIB);
    expect(fetcher.urgentInFlight).toBe(1);
    // Each finishes; the counts come back to zero and the streamer is told each time.
    fetcher.onReply(zeroMsg(link.sent[1]!, 128 * KIB, 4 * KIB, true));
    expect([fetcher.bulkBytesInFlight, fetcher.urgentInFlight, settled]).toEqual([96 * KIB, 0, 1]);
    fetcher.onReply(zeroMsg(link.sent[0]!, 0, 64 * KIB, true));
    expect([fetcher.bulkBytesInFlight, fetcher.urgentInFlight, settled]).toEqual([32 * KIB, 0, 2]);
    fetcher.onReply(dataMsg(link.sent[2]!, 256 * KIB, pattern(256 * KIB, 32 * KIB), true));
    expect([fetcher.bulkBytesInFlight, fetcher.urgentInFlight, settled]).toEqual([0, 0, 3]);
    expect(sinks.map((s) => s.events)).toEqual([['zero 0+65536', 'done'], ['zero 131072+4096', 'done'], ['data 262144+32768', 'done']]);
  });

  it('ids wrap from 0xfffffff0 back to 1 and never reach the top of the u32 range', () => {
    const f = new Fetcher(logged.log, { firstId: 0xffffffef });
    const l = new FakeLink();
    f.attach(l.asLink());
    for (let i = 0; i < 3; i++) f.request(i * 4 * KIB, 4 * KIB, CLASS_BULK, new Recorder());
    expect(l.sent.map((r) => r.id)).toEqual([0xffffffef, 0xfffffff0, 1]);
  });

  it('batch() sends the requests inside one link batch when connected, and still runs them without a link', () => {
    fetcher.batch(() => {
      fetcher.request(0, 4 * KIB, CLASS_BULK, new Recorder());
      fetcher.request(4 * KIB, 4 * KIB, CLASS_BULK, new Recorder());
    });
    fetcher.request(8 * KIB, 4 * KIB, CLASS_BULK, new Recorder());
    expect(link.sent.map((r) => r.batched)).toEqual([true, true, false]);
    // A closed link is not asked to batch (nor to send); the function still runs.
    link.closed = true;
    let ran = false;
    fetcher.batch(() => {
      ran = true;
      fetcher.request(12 * KIB, 4 * KIB, CLASS_BULK, new Recorder());
    });
    expect(ran).toBe(true);
    expect(link.sent).toHaveLength(3);
    fetcher.detach(link.asLink());
    ran = false;
    fetcher.batch(() => (ran = true));
    expect(ran).toBe(true);
  });

  it('is connected only with an open link; detach of a link that is no longer current changes nothing', () => {
    const f = new Fetcher(logged.log);
    expect([f.connected, f.serving]).toEqual([false, false]);
    const a = new FakeLink();
    f.attach(a.asLink());
    expect([f.connected, f.serving]).toEqual([true, true]);
    a.closed = true;
    expect(f.connected).toBe(false);
    const b = new FakeLink();
    f.attach(b.asLink());
    f.detach(a.asLink()); // the old link's close arrives late
    expect(f.connected).toBe(true);
    f.request(0, 4 * KIB, CLASS_URGENT, new Recorder());
    expect(b.sent).toHaveLength(1);
    f.detach(b.asLink());
    expect(f.connected).toBe(false);
  });
});

describe('replies are checked against the request', () => {
  it('parts arrive in order: data and zero parts go to the sink, the request finishes with the part that says done', () => {
    const sink = new Recorder();
    fetcher.request(64 * KIB, 16 * KIB, CLASS_BULK, sink);
    const req = link.last;
    fetcher.onReply(dataMsg(req, 64 * KIB, pattern(64 * KIB, 4 * KIB), false));
    fetcher.onReply(zeroMsg(req, 68 * KIB, 8 * KIB, false));
    expect(settled).toBe(0);
    expect(fetcher.bulkBytesInFlight).toBe(16 * KIB);
    fetcher.onReply(dataMsg(req, 76 * KIB, pattern(76 * KIB, 4 * KIB), true));
    expect(sink.events).toEqual(['data 65536+4096', 'zero 69632+8192', 'data 77824+4096', 'done']);
    expect(sink.data[0]!.data.equals(pattern(64 * KIB, 4 * KIB))).toBe(true);
    expect(settled).toBe(1);
    // Finished: its id is no longer outstanding.
    expectThrows(() => fetcher.onReply(zeroMsg(req, 80 * KIB, 4 * KIB, true)), ProtocolError, 'PC_ERR_UNKNOWN_REQUEST');
  });

  it('refuses a reply for an id never asked, a part out of order, a part past the end, and a done flag that disagrees', () => {
    const sink = new Recorder();
    fetcher.request(0, 16 * KIB, CLASS_URGENT, sink);
    const req = link.last;
    const e = expectThrows(() => fetcher.onReply({ ...zeroMsg(req, 0, 4 * KIB, false), id: req.id + 100 }), ProtocolError, 'PC_ERR_UNKNOWN_REQUEST');
    expect(e.message).toContain(`BLOCK_ZERO id ${req.id + 100}`);
    expectThrows(() => fetcher.onReply({ type: 'BLOCK_ERR', id: req.id + 100, errno: 5, message: 'x' }), ProtocolError, 'PC_ERR_UNKNOWN_REQUEST');
    // Skipping ahead, or going back, is out of range.
    expectThrows(() => fetcher.onReply(zeroMsg(req, 4 * KIB, 4 * KIB, false)), ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    fetcher.onReply(zeroMsg(req, 0, 4 * KIB, false));
    const back = expectThrows(() => fetcher.onReply(dataMsg(req, 0, pattern(0, 4 * KIB), false)), ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    expect(back.message).toContain(`BLOCK_DATA id ${req.id} at 0+4096 for 4096..16384`);
    // Past the end, by data or by zero length (even by one byte).
    expectThrows(() => fetcher.onReply(dataMsg(req, 4 * KIB, pattern(4 * KIB, 12 * KIB + 1), true)), ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    expectThrows(() => fetcher.onReply(zeroMsg(req, 4 * KIB, 12 * KIB + 1, true)), ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    // done on a part that does not end the request, or a last part without done.
    const early = expectThrows(() => fetcher.onReply(zeroMsg(req, 4 * KIB, 4 * KIB, true)), ProtocolError, 'PC_ERR_MALFORMED');
    expect(early.message).toContain('done flag');
    expectThrows(() => fetcher.onReply(zeroMsg(req, 4 * KIB, 12 * KIB, false)), ProtocolError, 'PC_ERR_MALFORMED');
    // None of the refused parts reached the sink; the request is still whole and finishes normally.
    expect(sink.events).toEqual(['zero 0+4096']);
    fetcher.onReply(zeroMsg(req, 4 * KIB, 12 * KIB, true));
    expect(sink.events).toEqual(['zero 0+4096', 'zero 4096+12288', 'done']);
  });

  it('a part the sink refuses as malformed is a protocol error; any other sink failure is logged, at most every 30 s', () => {
    const refusing = (err: unknown): FetchSink => ({
      ...new Recorder(),
      onData: () => {
        throw err;
      },
      onZero: () => {},
      onDone: () => {},
      onError: () => {},
    });
    fetcher.request(0, 8 * KIB, CLASS_BULK, refusing(new ProtocolError('PC_ERR_MALFORMED', 'not whole blocks')));
    expectThrows(() => fetcher.onReply(dataMsg(link.last, 0, pattern(0, 8 * KIB), true)), ProtocolError, 'PC_ERR_MALFORMED');
    expect(msgs(50)).toEqual([]);

    const diskErr = Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' });
    const sink = new Recorder();
    fetcher.request(16 * KIB, 8 * KIB, CLASS_BULK, { ...refusing(diskErr), onDone: () => sink.onDone() });
    const req = link.last;
    fetcher.onReply(dataMsg(req, 16 * KIB, pattern(16 * KIB, 4 * KIB), false));
    // The part was dropped, but the request moves on (the blocks stay missing in the store, not here).
    fetcher.onReply(dataMsg(req, 20 * KIB, pattern(20 * KIB, 4 * KIB), true));
    expect(sink.events).toEqual(['done']);
    const errors = () => logged.records.filter((r) => r.level === 50);
    expect(errors()).toHaveLength(1);
    expect(errors()[0]).toMatchObject({ offset: 16 * KIB, length: 4 * KIB, failures: 1, err: { message: 'ENOSPC: no space left' } });
    expect(errors()[0]!.msg).toMatch(/could not keep a fetched part/);
    // Within 30 s: counted, not logged; at 30 s: logged again with the count so far.
    const third = () => {
      fetcher.request(32 * KIB, 4 * KIB, CLASS_BULK, refusing(diskErr));
      fetcher.onReply(dataMsg(link.last, 32 * KIB, pattern(32 * KIB, 4 * KIB), true));
    };
    vi.advanceTimersByTime(29_999);
    third();
    expect(errors()).toHaveLength(1);
    vi.advanceTimersByTime(1);
    third();
    expect(errors()).toHaveLength(2);
    expect(errors()[1]).toMatchObject({ offset: 32 * KIB, failures: 4 });
  });
});

describe('re-issue after a reconnect', () => {
  it('asks the new link for exactly the bytes still missing, urgent requests first, under fresh ids', () => {
    const sinks = Array.from({ length: 4 }, () => new Recorder());
    fetcher.request(0, 16 * KIB, CLASS_BULK, sinks[0]!);
    fetcher.request(64 * KIB, 4 * KIB, CLASS_URGENT, sinks[1]!);
    fetcher.request(128 * KIB, 8 * KIB, CLASS_BULK, sinks[2]!);
    fetcher.request(192 * KIB, 4 * KIB, CLASS_URGENT, sinks[3]!);
    const old = [...link.sent];
    fetcher.onReply(dataMsg(old[0]!, 0, pattern(0, 4 * KIB), false));
    fetcher.onReply(zeroMsg(old[0]!, 4 * KIB, 4 * KIB, false));
    fetcher.detach(link.asLink());
    expect(fetcher.connected).toBe(false);
    // A request made while no link is up waits for the next one.
    fetcher.request(256 * KIB, 4 * KIB, CLASS_BULK, new Recorder());

    const next = new FakeLink();
    fetcher.attach(next.asLink());
    expect(next.sent.map(({ offset, length, cls }) => ({ offset, length, cls }))).toEqual([
      { offset: 64 * KIB, length: 4 * KIB, cls: CLASS_URGENT },
      { offset: 192 * KIB, length: 4 * KIB, cls: CLASS_URGENT },
      { offset: 8 * KIB, length: 8 * KIB, cls: CLASS_BULK },
      { offset: 128 * KIB, length: 8 * KIB, cls: CLASS_BULK },
      { offset: 256 * KIB, length: 4 * KIB, cls: CLASS_BULK },
    ]);
    const oldIds = new Set(old.map((r) => r.id));
    for (const r of next.sent) expect(oldIds.has(r.id)).toBe(false);
    expect(logged.records.find((r) => /re-issuing/.test(r.msg as string))).toMatchObject({ requests: 5 });
    // A late reply under an old id is refused; the new ids complete the requests where they left off.
    expectThrows(() => fetcher.onReply(zeroMsg(old[0]!, 8 * KIB, 8 * KIB, true)), ProtocolError, 'PC_ERR_UNKNOWN_REQUEST');
    fetcher.onReply(zeroMsg(next.sent[2]!, 8 * KIB, 8 * KIB, true));
    expect(sinks[0]!.events).toEqual(['data 0+4096', 'zero 4096+4096', 'zero 8192+8192', 'done']);
    expect(fetcher.bulkBytesInFlight).toBe(12 * KIB);
    expect(fetcher.urgentInFlight).toBe(2);
  });

  it('a reconnect with nothing outstanding sends nothing and says nothing', () => {
    fetcher.detach(link.asLink());
    const next = new FakeLink();
    fetcher.attach(next.asLink());
    expect(next.sent).toEqual([]);
    expect(logged.records).toEqual([]);
  });
});

describe('BLOCK_ERR: S could not read', () => {
  it('retries the rest of the request after 100, 200, 400, 800, 1600 ms, then fails it', () => {
    const sink = new Recorder();
    fetcher.request(0, 16 * KIB, CLASS_URGENT, sink);
    fetcher.onReply(zeroMsg(link.last, 0, 4 * KIB, false));
    let waits = 100;
    for (let attempt = 1; attempt <= 5; attempt++) {
      const req = link.last;
      fetcher.onReply(errMsg(req, 5, 'Input/output error'));
      expect(logged.records[logged.records.length - 1]).toMatchObject({ level: 40, offset: 0, errno: 5, attempt, msg: expect.stringMatching(/source failed a block read; retrying/) });
      vi.advanceTimersByTime(waits - 1);
      expect(link.last).toBe(req);
      vi.advanceTimersByTime(1);
      expect(link.last).not.toBe(req);
      expect(link.last).toMatchObject({ offset: 4 * KIB, length: 12 * KIB, cls: CLASS_URGENT });
      expect(link.last.id).not.toBe(req.id);
      // The old id is gone: S's late answer to it is refused.
      expectThrows(() => fetcher.onReply(zeroMsg(req, 4 * KIB, 12 * KIB, true)), ProtocolError, 'PC_ERR_UNKNOWN_REQUEST');
      waits *= 2;
    }
    expect(settled).toBe(0);
    const sent = link.sent.length;
    fetcher.onReply(errMsg(link.last, 28, 'No space'));
    expect(sink.events).toEqual(['zero 0+4096', 'error PC_ERR_BACKEND']);
    expectError(sink.errors[0], BackendError, 'PC_ERR_BACKEND');
    expect(sink.errors[0]!.message).toContain('source could not read 0+16384: errno 28 No space');
    expect([settled, fetcher.urgentInFlight]).toEqual([1, 0]);
    vi.advanceTimersByTime(10_000);
    expect(link.sent).toHaveLength(sent);
  });

  it('a retry does nothing for a request failed meanwhile', () => {
    const sink = new Recorder();
    fetcher.request(0, 4 * KIB, CLASS_BULK, sink);
    fetcher.onReply(errMsg(link.last));
    fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'rolling back'));
    vi.advanceTimersByTime(1000);
    expect(link.sent).toHaveLength(1);
    expect(sink.events).toEqual(['error PC_ERR_ROLLBACK']);
  });

  it('a reconnect during the backoff re-issues the request once: the retry timer does not ask again under another id', () => {
    const sink = new Recorder();
    fetcher.request(0, 8 * KIB, CLASS_BULK, sink);
    fetcher.onReply(errMsg(link.last));
    fetcher.detach(link.asLink());
    const next = new FakeLink();
    fetcher.attach(next.asLink());
    expect(next.sent).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(next.sent).toHaveLength(1);
    // S answers the re-issued request: it is still outstanding, not a protocol error.
    fetcher.onReply(zeroMsg(next.sent[0]!, 0, 8 * KIB, true));
    expect(sink.events).toEqual(['zero 0+8192', 'done']);
  });
});

describe('failAll', () => {
  it('fails every outstanding request once, and the counts go back to zero', () => {
    const sinks = [new Recorder(), new Recorder()];
    fetcher.request(0, 8 * KIB, CLASS_BULK, sinks[0]!);
    fetcher.request(8 * KIB, 4 * KIB, CLASS_URGENT, sinks[1]!);
    fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'gone'));
    expect(sinks.map((s) => s.events)).toEqual([['error PC_ERR_ROLLBACK'], ['error PC_ERR_ROLLBACK']]);
    expect([fetcher.bulkBytesInFlight, fetcher.urgentInFlight, settled]).toEqual([0, 0, 2]);
    fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'again'));
    expect(sinks[0]!.events).toHaveLength(1);
  });
});

/** A fallback whose reads the test resolves one at a time. */
class ScriptedFallback implements FallbackSource {
  readonly size = 64 * 1024 * 1024;
  reads: Array<{ offset: number; length: number; reply: Deferred<Buffer> }> = [];
  read(offset: number, length: number): Promise<Buffer> {
    const reply = deferred<Buffer>();
    this.reads.push({ offset, length, reply });
    return reply.promise;
  }
  /** Answer the oldest unanswered read with the pattern (or zeroes). */
  async answer(i: number, zero = false): Promise<void> {
    const r = this.reads[i]!;
    r.reply.resolve(zero ? Buffer.alloc(r.length) : pattern(r.offset, r.length));
    await vi.advanceTimersByTimeAsync(0);
  }
}

describe('fallback: S gone too long', () => {
  let source: ScriptedFallback;
  let flips: boolean[];
  beforeEach(() => {
    source = new ScriptedFallback();
    flips = [];
    fetcher.onFallback = (active) => flips.push(active);
    fetcher.setFallback(source, 5000);
  });

  it('takes over after the wait, reads what is missing in 256 KiB parts, zero parts as zero, and hands back when S returns', async () => {
    const sink = new Recorder();
    fetcher.request(0, 600 * KIB, CLASS_BULK, sink);
    fetcher.onReply(zeroMsg(link.last, 0, 8 * KIB, false));
    fetcher.detach(link.asLink());
    expect(fetcher.serving).toBe(false);
    vi.advanceTimersByTime(4999);
    expect([fetcher.fallbackActive, source.reads.length, flips]).toEqual([false, 0, []]);
    vi.advanceTimersByTime(1);
    expect([fetcher.fallbackActive, fetcher.serving, flips]).toEqual([true, true, [true]]);
    expect(logged.records.find((r) => r.level === 40)).toMatchObject({ afterMs: 5000, msg: expect.stringMatching(/fallback/) });
    await source.answer(0);
    await source.answer(1, true);
    await source.answer(2);
    expect(source.reads.map(({ offset, length }) => [offset, length])).toEqual([
      [8 * KIB, 256 * KIB],
      [264 * KIB, 256 * KIB],
      [520 * KIB, 80 * KIB],
    ]);
    expect(sink.events).toEqual(['zero 0+8192', 'data 8192+262144', 'zero 270336+262144', 'data 532480+81920', 'done']);
    expect(sink.data[0]!.data.equals(pattern(8 * KIB, 256 * KIB))).toBe(true);
    expect(fetcher.bytesFromFallback).toBe(592 * KIB);
    expect([settled, fetcher.bulkBytesInFlight]).toEqual([1, 0]);

    // New requests meanwhile go to the fallback; S's return hands back, and what the fallback is reading stays there.
    const during = new Recorder();
    fetcher.request(1024 * KIB, 4 * KIB, CLASS_URGENT, during);
    expect(source.reads).toHaveLength(4);
    const back = new FakeLink();
    fetcher.attach(back.asLink());
    expect([fetcher.fallbackActive, flips]).toEqual([false, [true, false]]);
    expect(logged.records.some((r) => /source is back/.test(r.msg as string))).toBe(true);
    expect(back.sent).toEqual([]);
    await source.answer(3);
    expect(during.events).toEqual(['data 1048576+4096', 'done']);
    // After the hand-back new requests go to S again.
    fetcher.request(2048 * KIB, 4 * KIB, CLASS_BULK, new Recorder());
    expect(back.sent).toHaveLength(1);
    expect(source.reads).toHaveLength(4);
  });

  it('is not armed while connected, without a fallback, or twice; a reconnect before the wait disarms it', async () => {
    fetcher.request(0, 4 * KIB, CLASS_BULK, new Recorder());
    fetcher.sourceGone(); // connected: nothing to do (no timer runs from here)
    vi.advanceTimersByTime(2000);
    fetcher.detach(link.asLink());
    vi.advanceTimersByTime(4999);
    expect(flips).toEqual([]);
    link = new FakeLink();
    fetcher.attach(link.asLink());
    vi.advanceTimersByTime(10_000);
    expect(flips).toEqual([]);
    // Gone at 0, back at 2 s, gone again at 3 s: the wait starts over from 3 s.
    fetcher.detach(link.asLink());
    vi.advanceTimersByTime(2000);
    link = new FakeLink();
    fetcher.attach(link.asLink());
    vi.advanceTimersByTime(1000);
    fetcher.detach(link.asLink());
    fetcher.sourceGone(); // said twice: one timer
    vi.advanceTimersByTime(4999);
    expect(flips).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(flips).toEqual([true]);
    fetcher.sourceGone(); // already serving from the fallback
    vi.advanceTimersByTime(10_000);
    expect(flips).toEqual([true]);
    expect(source.reads).toHaveLength(1);

    const plain = new Fetcher(logged.log);
    let told = 0;
    plain.onFallback = () => told++;
    plain.sourceGone();
    vi.advanceTimersByTime(60_000);
    expect([told, plain.fallbackActive]).toEqual([0, false]);
  });

  it('a fallback read that fails fails the request; a request failed while its read is pending hears nothing more', async () => {
    const sink = new Recorder();
    fetcher.detach(link.asLink());
    vi.advanceTimersByTime(5000);
    fetcher.request(300 * KIB, 300 * KIB, CLASS_BULK, sink);
    await source.answer(0);
    source.reads[1]!.reply.reject(new Error('replica unreachable'));
    await vi.advanceTimersByTimeAsync(0);
    expect(sink.events).toEqual(['data 307200+262144', 'error PC_ERR_BACKEND']);
    expectError(sink.errors[0], BackendError, 'PC_ERR_BACKEND');
    expect(sink.errors[0]!.message).toContain(`fallback read failed at ${556 * KIB}: replica unreachable`);
    expect((sink.errors[0]!.cause as Error).message).toBe('replica unreachable');
    expect([settled, fetcher.bulkBytesInFlight]).toEqual([1, 0]);

    const failed = new Recorder();
    fetcher.request(0, 300 * KIB, CLASS_BULK, failed);
    fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'stop'));
    await source.answer(2);
    expect(source.reads).toHaveLength(3);
    const rejected = new Recorder();
    fetcher.request(0, 4 * KIB, CLASS_URGENT, rejected);
    fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'stop'));
    source.reads[3]!.reply.reject(new Error('late'));
    await vi.advanceTimersByTimeAsync(0);
    expect(failed.events).toEqual(['error PC_ERR_ROLLBACK']);
    expect(rejected.events).toEqual(['error PC_ERR_ROLLBACK']);
    expect([settled, fetcher.bulkBytesInFlight, fetcher.urgentInFlight]).toEqual([3, 0, 0]);
  });

  it('a request settled by its own sink during a fallback read is not finished a second time', async () => {
    fetcher.detach(link.asLink());
    vi.advanceTimersByTime(5000);
    const sink = new Recorder();
    fetcher.request(0, 300 * KIB, CLASS_URGENT, {
      ...sink,
      onData: (o, d) => {
        sink.onData(o, d);
        fetcher.failAll(new BackendError('PC_ERR_ROLLBACK', 'shutting down'));
      },
      onZero: () => {},
      onDone: () => sink.onDone(),
      onError: (e) => sink.onError(e),
    });
    await source.answer(0);
    expect(sink.events).toEqual(['data 0+262144', 'error PC_ERR_ROLLBACK']);
    expect([settled, fetcher.urgentInFlight]).toEqual([1, 0]);
    // Nothing more is read for it.
    await vi.advanceTimersByTimeAsync(0);
    expect(source.reads).toHaveLength(1);
  });
});

describe('the path to S, measured from the requests', () => {
  it('a request\'s first reply part gives the round trip to its first byte; later parts and re-asked parts give none', () => {
    const sink = new Recorder();
    fetcher.request(0, 128 * KIB, CLASS_BULK, sink);
    const req = link.last;
    vi.advanceTimersByTime(30);
    // The frame's first byte arrived 5 ms before it was whole (a slow link): the round trip is 25 ms, not 30.
    fetcher.onReply(dataMsg(req, 0, pattern(0, 64 * KIB), false), performance.now() - 5);
    expect(fetcher.path.minRttMs).toBe(25);
    vi.advanceTimersByTime(10);
    fetcher.onReply(dataMsg(req, 64 * KIB, pattern(64 * KIB, 64 * KIB), true), performance.now() - 1);
    expect(fetcher.path.minRttMs).toBe(25);
    expect(fetcher.path.srttMs).toBe(25);
  });

  it('data bytes delivered over at least a round trip give the bottleneck\'s rate; zero parts carry no bytes over the link', () => {
    const data = new Recorder();
    fetcher.request(0, 256 * KIB, CLASS_BULK, data);
    const req = link.last;
    vi.advanceTimersByTime(20);
    fetcher.onReply(dataMsg(req, 0, pattern(0, 256 * KIB), true));
    // 256 KiB in the 20 ms since the request went out (nothing was owed before it).
    expect(fetcher.path.bottleneckRate).toBeCloseTo((256 * KIB) / 20, 5);
    const zero = new Recorder();
    fetcher.request(1024 * KIB, 1024 * KIB, CLASS_BULK, zero);
    vi.advanceTimersByTime(20);
    fetcher.onReply(zeroMsg(link.last, 1024 * KIB, 1024 * KIB, true));
    expect(fetcher.path.bottleneckRate).toBeCloseTo((256 * KIB) / 20, 5);
  });

  it('a new link is a new path: measured afresh, nothing owed on it until requests are re-issued', () => {
    fetcher.request(0, 64 * KIB, CLASS_BULK, new Recorder());
    vi.advanceTimersByTime(10);
    fetcher.onReply(dataMsg(link.last, 0, pattern(0, 32 * KIB), false));
    const before = fetcher.path;
    expect(before.minRttMs).toBe(10);
    const next = new FakeLink();
    fetcher.attach(next.asLink());
    expect(fetcher.path).not.toBe(before);
    expect(fetcher.path.minRttMs).toBeNull();
    // The re-issued remainder is timed from its own send on the new link.
    vi.advanceTimersByTime(40);
    fetcher.onReply(dataMsg(next.last, 32 * KIB, pattern(32 * KIB, 32 * KIB), true));
    expect(fetcher.path.minRttMs).toBe(40);
  });
});
