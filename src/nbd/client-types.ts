// The NBD client's public types: where to connect, its options, its states, and what blockStatus returns.
import type { Logger } from '../common/logger.js';
import type { NbdAddress } from './uri.js';

export type NbdTarget = string | NbdAddress;

export type ClientState = 'negotiating' | 'ready' | 'closing' | 'closed' | 'failed';

export const CLIENT_TRANSITIONS: Record<ClientState, readonly ClientState[]> = {
  negotiating: ['ready', 'failed'],
  ready: ['closing', 'failed'],
  closing: ['closed', 'failed'],
  closed: [],
  failed: [],
};

export interface NbdClientOptions {
  logger?: Logger;
  /** Requests on the wire at once; more wait their turn. Default 16 (qemu's depth). */
  maxInFlight?: number;
  /** Ask for structured replies (default true). */
  structuredReplies?: boolean;
  /** Ask for base:allocation (default true; needs structured replies). */
  baseAllocation?: boolean;
  /** Time allowed for TCP connect plus handshake. Default 30 s. */
  connectTimeoutMs?: number;
  /** Upper bound on one READ/WRITE request even if the server allows more. Default 32 MiB. */
  maxRequestBytes?: number;
  /** Time close() waits for the server to close after NBD_CMD_DISC. Default 5 s. */
  closeTimeoutMs?: number;
  /**
   * Time close() waits for requests in flight before giving up on them and dropping the
   * connection (which nbdkit 1.32 does not survive: keep it generous). Default 60 s.
   */
  drainTimeoutMs?: number;
}

/** One run of base:allocation: flags are NBD_STATE_HOLE / NBD_STATE_ZERO bits. */
export interface BlockStatusExtent {
  offset: number;
  length: number;
  flags: number;
}

export interface RequestOptions {
  fua?: boolean;
}
