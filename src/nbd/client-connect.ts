// Opening the NBD client's socket and telling a failed handshake to the caller: where to connect (URI or
// address), the export name checked before any socket, and the one error a failed connect becomes.
import net from 'node:net';
import { NbdError } from '../common/errors.js';
import type { NbdTarget } from './client-types.js';
import { formatNbdUri, parseNbdUri } from './uri.js';
import { utf8 } from './wire-write.js';

/** The socket to the target's server, the export name to ask for (exportName overrides the URI's) and the URI for logs. */
export function openSocket(target: NbdTarget, exportName: string | undefined): { socket: net.Socket; name: string; uri: string } {
  const parsed = typeof target === 'string' ? parseNbdUri(target) : { address: target, exportName: '' };
  const name = exportName ?? parsed.exportName;
  const uri = formatNbdUri(parsed.address, name);
  // Refused here, before a socket, as the encoder would refuse it: a name the spec does not allow is the caller's mistake.
  utf8(name, 'export name');
  const socket = 'socketPath' in parsed.address
    ? net.connect({ path: parsed.address.socketPath })
    : net.connect({ host: parsed.address.host, port: parsed.address.port });
  socket.setNoDelay(true);
  return { socket, name, uri };
}

/**
 * What a failed connect throws: the server's refusal of an option as it is; a connection lost mid-handshake
 * (timeout, reset, EOF) or a server that broke the handshake as NBD_ERR_HANDSHAKE naming the URI.
 */
export function connectFailure(err: unknown, uri: string): NbdError {
  if (err instanceof NbdError && err.code === 'NBD_ERR_CLOSED') {
    const cause = err.cause instanceof Error ? err.cause : err;
    return new NbdError('NBD_ERR_HANDSHAKE', `cannot connect to ${uri}: ${cause.message}`, { cause: err });
  }
  if (err instanceof NbdError && err.code === 'NBD_ERR_OPTION') return err;
  return new NbdError('NBD_ERR_HANDSHAKE', `cannot connect to ${uri}: ${(err as Error).message}`, { cause: err });
}
