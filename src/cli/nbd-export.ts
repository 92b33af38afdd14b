// D's NBD export of the migrating disk: the block store (copy-on-read underneath) served over TCP and/or a Unix socket.
// Its options are all checked at start, before anything listens: a writable disk is not offered to the network by mistake.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { BlockDevice } from '../common/block-device.js';
import { UsageError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { onlyLoopback } from '../common/loopback.js';
import type { DestExport } from '../dest/export-owner.js';
import { parseHostPort, type Endpoint } from '../link/connect.js';
import { ReadOnlyDevice } from '../nbd/read-only-device.js';
import { NbdServer, type NbdTlsCredentials } from '../nbd/server.js';
import { DEFAULT_SOCKET_MODE } from '../nbd/socket-file.js';
import { formatNbdUri } from '../nbd/uri.js';
import { optional } from './args.js';
import { checkSocketPath, listenFailure, type PortHold } from './preflight.js';
import { parseIntArg } from './sizes.js';

/** The export's options beyond --nbd-listen, --nbd-socket and --nbd-name (for parseCommandArgs). */
export const NBD_EXPORT_OPTIONS = {
  'nbd-tls-cert': { type: 'string' },
  'nbd-tls-key': { type: 'string' },
  'nbd-tls-ca': { type: 'string' },
  'nbd-insecure': { type: 'boolean' },
  'nbd-socket-mode': { type: 'string' },
  'nbd-read-only': { type: 'boolean' },
  'nbd-max-connections': { type: 'string' },
} as const;

export const NBD_EXPORT_HELP = `  --nbd-tls-cert F --nbd-tls-key F [--nbd-tls-ca F]
                          TLS on the TCP export (NBD STARTTLS, x509, as qemu-nbd --tls-creds), then
                          mandatory: clients use nbds:// or tls-creds; with a CA, clients must present
                          a certificate it signed
  --nbd-insecure          allow --nbd-listen on a non-loopback address without TLS (refused otherwise)
  --nbd-socket-mode MODE  mode of the --nbd-socket file (default 0600: only its owner may connect)
  --nbd-read-only         the export refuses writes (NBD_FLAG_READ_ONLY; writes get EPERM)
  --nbd-max-connections N clients at once (default 128); at the cap, clients still negotiating and then
                          the longest idle ones make room for a new client`;

export interface ExportConfig {
  name: string;
  tcp?: Endpoint;
  /** TLS on the TCP export; the Unix socket is guarded by its file mode. */
  tls?: NbdTlsCredentials;
  socketPath?: string;
  socketMode: number;
  readOnly: boolean;
  maxConnections: number;
}

export interface RunningExport {
  uris: string[];
  close(): Promise<void>;
}

type Values = Record<string, string | boolean | undefined>;

/** Every --nbd-* option checked and loaded; undefined when no export was asked for. Throws UsageError (exit 2). */
export async function parseExportOptions(values: Values): Promise<ExportConfig | undefined> {
  const listen = optional(values, 'nbd-listen');
  const socketPath = optional(values, 'nbd-socket');
  const given = (names: string[]): string[] => names.filter((n) => values[n] !== undefined).map((n) => `--${n}`);
  if (!listen && !socketPath) {
    const stray = given(Object.keys(NBD_EXPORT_OPTIONS));
    if (stray.length > 0) throw new UsageError('PC_ERR_USAGE', `${stray.join(', ')} ${stray.length > 1 ? 'need' : 'needs'} an export: add --nbd-listen HOST:PORT or --nbd-socket PATH`);
    return undefined;
  }
  const tlsOpts = given(['nbd-tls-cert', 'nbd-tls-key', 'nbd-tls-ca']);
  if (tlsOpts.length > 0 && !listen) {
    throw new UsageError('PC_ERR_USAGE', `${tlsOpts.join(', ')} secure the TCP export: add --nbd-listen (the Unix socket is guarded by --nbd-socket-mode)`);
  }
  if (values['nbd-socket-mode'] !== undefined && !socketPath) throw new UsageError('PC_ERR_USAGE', '--nbd-socket-mode goes with --nbd-socket');
  const config: ExportConfig = {
    name: optional(values, 'nbd-name') ?? 'disk',
    socketMode: parseMode(optional(values, 'nbd-socket-mode')),
    readOnly: values['nbd-read-only'] === true,
    maxConnections: parseIntArg(optional(values, 'nbd-max-connections') ?? '128', '--nbd-max-connections', 1, 65_536),
  };
  const tlsCreds = loadTlsCredentials(optional(values, 'nbd-tls-cert'), optional(values, 'nbd-tls-key'), optional(values, 'nbd-tls-ca'));
  if (listen) {
    config.tcp = parseHostPort(listen, '--nbd-listen');
    if (tlsCreds) config.tls = tlsCreds;
    await checkExposure(config.tcp, tlsCreds !== undefined, values['nbd-insecure'] === true);
    checkNotMigrationPort(config.tcp, optional(values, 'listen'));
  } else if (values['nbd-insecure'] !== undefined) {
    throw new UsageError('PC_ERR_USAGE', '--nbd-insecure goes with --nbd-listen');
  }
  if (socketPath) {
    await checkSocketPath(socketPath, '--nbd-socket');
    config.socketPath = socketPath;
  }
  return config;
}

export async function startExport(device: BlockDevice, config: ExportConfig, log: Logger): Promise<RunningExport> {
  const exported = config.readOnly ? new ReadOnlyDevice(device) : device;
  const server = new NbdServer({ exports: [{ name: config.name, device: exported }], logger: log, maxConnections: config.maxConnections });
  const uris: string[] = [];
  try {
    if (config.tcp) {
      const addr = await server.listen({ host: config.tcp.host, port: config.tcp.port, ...(config.tls ? { tls: config.tls } : {}) });
      const port = typeof addr === 'string' ? config.tcp.port : addr.port;
      const uri = formatNbdUri({ host: config.tcp.host, port }, config.name);
      uris.push(config.tls ? uri.replace(/^nbd:/, 'nbds:') : uri);
    }
    if (config.socketPath) {
      await server.listen({ path: config.socketPath, mode: config.socketMode });
      uris.push(formatNbdUri({ socketPath: config.socketPath }, config.name));
    }
  } catch (e) {
    await server.close();
    throw e;
  }
  log.info({ uris, tls: Boolean(config.tls), readOnly: config.readOnly }, 'NBD export open');
  if (config.tcp && !config.tls) {
    log.warn({ address: `${config.tcp.host}:${config.tcp.port}` }, 'NBD export on TCP without TLS: any local user (any host, with --nbd-insecure) can connect; --nbd-socket (mode 0600) or --nbd-tls-cert keep others out');
  }
  return { uris, close: () => server.close() };
}

function parseMode(text: string | undefined): number {
  if (text === undefined) return DEFAULT_SOCKET_MODE;
  if (!/^0?[0-7]{3}$/.test(text)) throw new UsageError('PC_ERR_USAGE', `--nbd-socket-mode must be an octal mode such as 0600 or 0660, got '${text}'`);
  return Number.parseInt(text, 8);
}

function loadTlsCredentials(cert: string | undefined, key: string | undefined, ca: string | undefined): NbdTlsCredentials | undefined {
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key) throw new UsageError('PC_ERR_USAGE', '--nbd-tls-cert and --nbd-tls-key go together (--nbd-tls-ca is optional)');
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new UsageError('PC_ERR_USAGE', `cannot read ${what} ${path}: ${(e as Error).message}`);
    }
  };
  const creds: NbdTlsCredentials = { cert: read(cert, '--nbd-tls-cert'), key: read(key, '--nbd-tls-key') };
  if (ca) creds.ca = read(ca, '--nbd-tls-ca');
  try {
    // A key that does not match, or a file that is not PEM, is found now rather than at a client's STARTTLS.
    tls.createSecureContext({ cert: creds.cert, key: creds.key, ...(creds.ca ? { ca: creds.ca } : {}) });
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--nbd-tls-cert/--nbd-tls-key/--nbd-tls-ca are unusable: ${(e as Error).message}`);
  }
  return creds;
}

/** A plain-text writable disk is offered to loopback only, unless the operator says the network is trusted. */
async function checkExposure(ep: Endpoint, tlsOn: boolean, insecure: boolean): Promise<void> {
  if (tlsOn && insecure) throw new UsageError('PC_ERR_USAGE', '--nbd-insecure and --nbd-tls-cert contradict each other: choose one');
  if (tlsOn || insecure || (await onlyLoopback(ep.host, '--nbd-listen'))) return;
  throw new UsageError(
    'PC_ERR_USAGE',
    `--nbd-listen ${ep.host}:${ep.port} is reachable from other hosts and the export is the guest's writable disk: add --nbd-tls-cert and --nbd-tls-key (and --nbd-tls-ca to require client certificates), or --nbd-insecure if this network is trusted; nothing was started`,
  );
}

/** The migration socket is bound first, so the export would find its own agent on the port at Prepare. */
function checkNotMigrationPort(ep: Endpoint, listen: string | undefined): void {
  if (!listen || ep.port === 0) return;
  const m = parseHostPort(listen, '--listen');
  const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::';
  if (m.port === ep.port && (m.host === ep.host || wildcard(m.host) || wildcard(ep.host))) {
    throw new UsageError('PC_ERR_USAGE', `--nbd-listen ${ep.host}:${ep.port} and --listen ${listen} are the same port: give the export another one`);
  }
}

/** D's export as D owns it: the held port handed over at Prepare (its number too, when port 0 picked it at start). */
export function ownedExport(config: ExportConfig, hold: PortHold | null, log: Logger, events: EventSink): DestExport {
  let running: RunningExport | null = null;
  return {
    start: async (store) => {
      await hold?.release();
      const where = config.tcp && hold ? { ...config, tcp: { host: config.tcp.host, port: hold.port } } : config;
      running = await startExport(store, where, log).catch((e: unknown) => {
        throw config.tcp ? listenFailure(e, config.tcp, '--nbd-listen') : e;
      });
      events.emit('export', { name: config.name, uris: running.uris });
      return running.uris;
    },
    stop: async () => {
      await running?.close();
      running = null;
    },
  };
}
