// A stand-in for D's fetcher in block-store tests: records requests; the test answers them with S's "image", so
// it decides when (and what) S's replies deliver.
import type { FetchSink } from '../../src/dest/fetcher.js';
import type { Bytes } from '../../src/protocol/byte-parts.js';

export interface ScriptedRequest {
  offset: number;
  length: number;
  cls: number;
  sink: FetchSink;
}

export class ScriptedFetcher {
  requests: ScriptedRequest[] = [];
  /** How an answer's bytes are handed over (one Buffer by default; tests cut them into parts). */
  shape: (bytes: Buffer) => Bytes = (b) => b;
  request(offset: number, length: number, cls: number, sink: FetchSink): void {
    this.requests.push({ offset, length, cls, sink });
  }
  /** Answer request i with the source image's bytes. */
  answer(i: number, source: Buffer): void {
    const r = this.requests[i]!;
    r.sink.onData(r.offset, this.shape(source.subarray(r.offset, r.offset + r.length)));
    r.sink.onDone();
  }
  /** Answer request i with one zero part. */
  answerZero(i: number): void {
    const r = this.requests[i]!;
    r.sink.onZero(r.offset, r.length);
    r.sink.onDone();
  }
  get last(): ScriptedRequest {
    return this.requests[this.requests.length - 1]!;
  }
}
