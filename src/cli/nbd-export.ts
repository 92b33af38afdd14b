// D's NBD export of the migrating disk: the block store (copy-on-read underneath) served over TCP and/or a Unix socket.
import type { BlockDevice } from '../common/block-device.js';
import type { Logger } from '../common/logger.js';
import type { Endpoint } from '../link/connect.js';
import { NbdServer } from '../nbd/server.js';
import { formatNbdUri } from '../nbd/uri.js';

export interface RunningExport {
  uris: string[];
  close(): Promise<void>;
}

export async function startExport(
  device: BlockDevice,
  opts: { tcp: Endpoint | undefined; socketPath: string | undefined; name: string; log: Logger },
): Promise<RunningExport> {
  const server = new NbdServer({ exports: [{ name: opts.name, device }], logger: opts.log });
  const uris: string[] = [];
  if (opts.tcp) {
    const addr = await server.listen({ host: opts.tcp.host, port: opts.tcp.port });
    const port = typeof addr === 'string' ? opts.tcp.port : addr.port;
    uris.push(formatNbdUri({ host: opts.tcp.host, port }, opts.name));
  }
  if (opts.socketPath) {
    await server.listen({ path: opts.socketPath });
    uris.push(formatNbdUri({ socketPath: opts.socketPath }, opts.name));
  }
  opts.log.info({ uris }, 'NBD export open');
  return { uris, close: () => server.close() };
}
