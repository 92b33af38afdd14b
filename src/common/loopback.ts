// Whether a listening address is reachable only from this host: what decides if a plain-text server may bind it.
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { UsageError } from './errors.js';

export function isLoopback(address: string): boolean {
  if (net.isIPv4(address)) return address.startsWith('127.');
  const a = address.toLowerCase();
  return a === '::1' || a.startsWith('::ffff:127.');
}

/** True when `host` (an address, or a name resolved now) is loopback only; `flag` names the option in errors. */
export async function onlyLoopback(host: string, flag: string): Promise<boolean> {
  const addresses = net.isIP(host)
    ? [host]
    : await lookup(host, { all: true }).then(
        (list) => list.map((a) => a.address),
        (e: Error) => {
          throw new UsageError('PC_ERR_USAGE', `${flag} ${host}: cannot resolve it (${e.message})`);
        },
      );
  return addresses.length > 0 && addresses.every(isLoopback);
}
