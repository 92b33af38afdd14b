// The NBD server connection's options, its states and their allowed transitions, and the handshake flags it offers.
import type { Logger } from '../common/logger.js';
import * as C from './constants.js';
import type { ExportCatalog } from './server-negotiation.js';
import type { TlsUpgrader } from './server-tls.js';

export interface ConnectionOptions {
  catalog: ExportCatalog;
  logger: Logger;
  maxPayload: number;
  maxInFlight: number;
  /** Payload bytes (WRITE data held, READ data owed) in flight before the socket is paused. */
  maxInFlightBytes: number;
  maxOptions: number;
  maxOptionLength: number;
  handshakeTimeoutMs: number;
  /** TLS is mandatory on this connection (FORCEDTLS): the socket must be a net.Socket. */
  tls?: TlsUpgrader;
}

export type ConnState = 'clientFlags' | 'options' | 'tlsHandshake' | 'transmission' | 'draining' | 'closed';

/** What the server's connection cap looks at when it must make room. */
export type ConnPhase = 'negotiating' | 'transmission' | 'ending';

export const TRANSITIONS: Record<ConnState, readonly ConnState[]> = {
  clientFlags: ['options', 'closed'],
  options: ['transmission', 'tlsHandshake', 'closed'],
  tlsHandshake: ['options', 'closed'],
  transmission: ['draining', 'closed'],
  draining: ['closed'],
  closed: [],
};

/** What our greeting offers: fixed newstyle, and leaving out EXPORT_NAME's padding. */
export const HANDSHAKE_FLAGS = C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES;
/** The client flags we understand; any other bit closes the connection, as the spec says. */
export const KNOWN_CLIENT_FLAGS = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES;

/** The connection cap's view of a state: who is still negotiating, who is serving, who is on the way out. */
export function phaseOf(state: ConnState): ConnPhase {
  if (state === 'transmission') return 'transmission';
  return state === 'draining' || state === 'closed' ? 'ending' : 'negotiating';
}
