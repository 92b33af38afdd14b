// NBD URIs (the libnbd/qemu convention): nbd://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH.
import { NbdError } from '../common/errors.js';
import { NBD_DEFAULT_PORT, NBD_MAX_STRING } from './constants.js';

export type NbdAddress = { host: string; port: number } | { socketPath: string };

export interface NbdUri {
  address: NbdAddress;
  /** Export name ("" = the server's default export). */
  exportName: string;
}

/** The schemes a postcopy image or fallback argument is an NBD URI by (nbds:// is refused by parseNbdUri, with why). */
const NBD_URI_SCHEME = /^nbd(\+unix)?:\/\//;

/** Whether an --image / --fallback argument names an NBD export rather than a file. */
export function isNbdUri(text: string): boolean {
  return NBD_URI_SCHEME.test(text);
}

/** The URI without its scheme (for names derived from it, e.g. a default state dir). */
export function withoutNbdScheme(uri: string): string {
  return uri.replace(NBD_URI_SCHEME, '');
}

function bad(uri: string, why: string): NbdError {
  return new NbdError('NBD_ERR_URI', `${why}: ${uri}`);
}

export function parseNbdUri(uri: string): NbdUri {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (err) {
    throw new NbdError('NBD_ERR_URI', `not a URI: ${uri}`, { cause: err });
  }
  if (url.username || url.password) throw bad(uri, 'credentials are not supported');
  if (url.hash) throw bad(uri, 'fragment not allowed');
  let exportName: string;
  try {
    exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  } catch (err) {
    throw new NbdError('NBD_ERR_URI', `bad percent-encoding in export name: ${uri}`, { cause: err });
  }
  if (Buffer.byteLength(exportName) > NBD_MAX_STRING) throw bad(uri, 'export name longer than 4096 bytes');
  switch (url.protocol) {
    case 'nbd:': {
      if (!url.hostname) throw bad(uri, 'missing host');
      if (url.search) throw bad(uri, 'query parameters are only for nbd+unix');
      const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
      // WHATWG keeps IPv6 brackets in hostname; net.connect wants them off.
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
      return { address: { host, port }, exportName };
    }
    case 'nbd+unix:': {
      if (url.host) throw bad(uri, 'nbd+unix takes no host');
      const socketPath = url.searchParams.get('socket');
      if (!socketPath) throw bad(uri, 'nbd+unix needs ?socket=PATH');
      return { address: { socketPath }, exportName };
    }
    case 'nbds:':
    case 'nbds+unix:':
      throw bad(uri, 'TLS (nbds) is not supported');
    default:
      throw bad(uri, `unsupported scheme ${url.protocol}`);
  }
}

/** For logs: the URI form of an address and export. */
export function formatNbdUri(address: NbdAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ('socketPath' in address) return `nbd+unix:///${name}?socket=${encodeURIComponent(address.socketPath)}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
