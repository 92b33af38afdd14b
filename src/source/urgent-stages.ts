// S's share of a demand miss: from D's urgent BLOCK_REQ decoded here to its read done, and to the reply handed
// to the socket. D's socket-to-reply stage minus these is the wire and the bulk bytes queued ahead.
import { StageHistograms } from '../common/stage-histograms.js';

export const URGENT_STAGES = ['received-to-read', 'read-to-socket', 'total'] as const;
export type UrgentStage = (typeof URGENT_STAGES)[number];

export class UrgentStages extends StageHistograms<UrgentStage> {
  constructor() {
    super(URGENT_STAGES);
  }

  /** One urgent request: received, read done and reply written, as performance.now() times. */
  served(receivedAt: number, readAt: number, socketAt: number): void {
    this.record('received-to-read', readAt - receivedAt);
    this.record('read-to-socket', socketAt - readAt);
    this.record('total', socketAt - receivedAt);
  }
}
