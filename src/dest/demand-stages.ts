// Where a guest's wait for a missing block goes, stage by stage: each urgent fetch carries its timestamps
// (performance.now()) from the guest's request to the answer, and the stages of every answered miss are
// recorded into per-stage histograms (D's summary, its progress events, the bench).
import type { ReadTrace } from '../common/block-device.js';
import { StageHistograms, type StageBrief, type StageStats } from '../common/stage-histograms.js';

/** D's stages of a demand miss, in order; `total` is request received → answered. */
export const DEMAND_STAGES = ['export-to-queued', 'queued-to-socket', 'socket-to-reply', 'reply-to-written', 'written-to-answered', 'total'] as const;
export type DemandStage = (typeof DEMAND_STAGES)[number];

/** One urgent fetch's times, filled in as it goes (undefined: not reached yet). */
export interface FetchTiming {
  /** The BLOCK_REQ was queued on the link. */
  queuedAt: number;
  /** The socket took the request's frame. */
  socketAt?: number;
  /** S's reply frame was decoded here. */
  replyAt?: number;
  /** The block is in the image. */
  writtenAt?: number;
}

export class DemandStages {
  readonly #histograms = new StageHistograms(DEMAND_STAGES);

  /**
   * A guest read found blocks missing and waited for `fetches`: have its stages recorded once it is answered
   * (through trace.answered, called by whoever hands the reply back; without a trace, when the read resolves).
   */
  track(trace: ReadTrace, fetches: readonly FetchTiming[]): void {
    trace.answered = (at) => this.#record(trace.receivedAt, fetches, at);
  }

  summary(): Record<DemandStage, StageStats> {
    return this.#histograms.summary();
  }

  brief(): Record<DemandStage, StageBrief> {
    return this.#histograms.brief();
  }

  #record(receivedAt: number, fetches: readonly FetchTiming[], answeredAt: number): void {
    // The read waited for the last of its blocks: that fetch's stages are the ones the guest felt.
    let f: FetchTiming | undefined;
    for (const x of fetches) if (x.writtenAt !== undefined && (f === undefined || x.writtenAt > f.writtenAt!)) f = x;
    const h = this.#histograms;
    h.record('total', answeredAt - receivedAt);
    if (!f || f.socketAt === undefined || f.replyAt === undefined || f.writtenAt === undefined) return;
    // A read that joined a fetch already under way queued it before it arrived: that stage is zero for it.
    h.record('export-to-queued', Math.max(0, f.queuedAt - receivedAt));
    h.record('queued-to-socket', f.socketAt - f.queuedAt);
    h.record('socket-to-reply', f.replyAt - f.socketAt);
    h.record('reply-to-written', f.writtenAt - f.replyAt);
    h.record('written-to-answered', answeredAt - f.writtenAt);
  }
}
