// `postcopy serve`: the host service. One process per host runs every migration of the host, both roles, as jobs:
// one migration port for all incoming migrations, a JSON control API on a 0600 Unix socket, Prometheus metrics.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError } from '../common/errors.js';
import { nullEvents } from '../common/events.js';
import { createRootLogger } from '../common/logger.js';
import { checkPrivateDir } from '../common/private-dir.js';
import { isLoopback, onlyLoopback } from '../common/loopback.js';
import { parseHostPort, type Endpoint } from '../link/connect.js';
import { BandwidthPool } from '../service/bandwidth-pool.js';
import { startControlApi } from '../service/control-api.js';
import { FD_NAMES, fdNamed, takeListenFds } from '../service/listen-fds.js';
import { ServiceMetrics } from '../service/metrics.js';
import { startMetricsServer } from '../service/metrics-server.js';
import { SharedMigrationPort } from '../service/migration-port.js';
import { HostService } from '../service/service.js';
import { optional, parseCommandArgs, required } from './args.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { checkAgentOptions, checkSocketPath, checkStateDir, listenFailure } from './preflight.js';
import { DEFAULT_CONTROL_PATH } from './control-client.js';
import { serviceJobLauncher } from './service-jobs.js';
import { parseIntArg, parseRate } from './sizes.js';

const DEFAULT_MAX_JOBS = 2;

export const SERVE_HELP = `Usage: postcopy serve --root DIR --listen HOST:PORT [--control PATH] [options]

Run every migration of this host, either role, as a job: one migration port for all incoming migrations (each
job is told apart by its ticket at the handshake), a JSON control API on a Unix socket, Prometheus metrics.
Jobs are submitted with 'postcopy submit' (or POST /v1/jobs); see 'Running as a service' in the README.

  --root DIR              the service's state: DIR/jobs/ID/ per job (0700). A restart with the same root
                          (after a crash or SIGKILL too) resumes every job it had
  --listen HOST:PORT      the migration port of every dest job (off loopback only with --tls-*, or
                          --insecure-plaintext on a trusted network)
  --control PATH          the control API's Unix socket, mode 0600 (default ${DEFAULT_CONTROL_PATH})
  --metrics-listen HOST:PORT
                          Prometheus metrics at /metrics (off loopback only with --tls-*)
  --max-jobs N            jobs running at once per role; the rest wait, queued, in order (default ${DEFAULT_MAX_JOBS})
  --max-bandwidth RATE    bulk bytes per second for all jobs of the host together (e.g. 100M), shared fairly
                          among the running jobs; a job's own cap (set-speed) applies within its share;
                          demand reads are never throttled
  --tls-cert F --tls-key F --tls-ca F
                          mutual TLS on the migration port (and metrics): the service's certificate and key,
                          and the CA that signed its peers' (source jobs use them to reach other hosts)
  --insecure-plaintext    allow --listen off loopback without TLS (the ticket still authenticates each
                          migration; the disk's data crosses the network unencrypted)
  --log-level LEVEL       pino level for stderr logs (default: info)

Socket activation: started by systemd with LISTEN_FDS, the sockets named 'migration', 'control' and 'metrics'
(FileDescriptorName=) are used instead of --listen, --control and --metrics-listen.

SIGTERM or SIGINT stops the service; every job's state is kept and a restart resumes it.

${EXIT_HELP}`;

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    root: { type: 'string' },
    listen: { type: 'string' },
    control: { type: 'string' },
    'metrics-listen': { type: 'string' },
    'max-jobs': { type: 'string' },
    'max-bandwidth': { type: 'string' },
    'insecure-plaintext': { type: 'boolean' },
    'log-level': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP + '\n');
    return EXIT.OK;
  }
  // Everything is checked before anything listens: one line and exit 2 for a mistake.
  const { logLevel, tls } = checkAgentOptions(values);
  const activated = takeListenFds();
  const fds = { migration: fdNamed(activated, FD_NAMES.migration), control: fdNamed(activated, FD_NAMES.control), metrics: fdNamed(activated, FD_NAMES.metrics) };
  const root = resolve(required(values, 'root'));
  checkStateDir(root, '--root');
  if (statSync(root, { throwIfNoEntry: false })) checkPrivateDir(root, '--root');
  const listen = fds.migration === undefined ? parseHostPort(required(values, 'listen'), '--listen') : null;
  const plaintextAllowed = tls !== undefined || values['insecure-plaintext'] === true;
  const migrationFix = 'add --tls-cert, --tls-key and --tls-ca, or --insecure-plaintext on a trusted network';
  if (listen && !plaintextAllowed && !(await onlyLoopback(listen.host, '--listen'))) throw offLoopback('--listen', listen, migrationFix);
  const controlPath = optional(values, 'control') ?? DEFAULT_CONTROL_PATH;
  if (fds.control === undefined) await checkSocketPath(controlPath, '--control');
  const metricsListen = fds.metrics === undefined && values['metrics-listen'] !== undefined ? parseHostPort(String(values['metrics-listen']), '--metrics-listen') : null;
  if (metricsListen && !tls && !(await onlyLoopback(metricsListen.host, '--metrics-listen'))) throw offLoopback('--metrics-listen', metricsListen, 'add --tls-cert, --tls-key and --tls-ca');
  const maxJobs = parseIntArg(optional(values, 'max-jobs') ?? String(DEFAULT_MAX_JOBS), '--max-jobs', 1, 10_000);
  const maxBandwidth = values['max-bandwidth'] === undefined ? null : parseRate(String(values['max-bandwidth']), '--max-bandwidth');

  const log = createRootLogger({ level: logLevel, name: 'postcopy-serve' });
  let metrics: ServiceMetrics | null = null;
  const service = new HostService({
    root,
    maxJobs,
    pool: new BandwidthPool(maxBandwidth),
    launcher: serviceJobLauncher({ tls }),
    port: { listenerFor: (ticketId) => port.listenerFor(ticketId) },
    log,
    observer: { demandFetch: (role, seconds) => metrics?.demandFetch(role, seconds) },
  });
  metrics = new ServiceMetrics(() => service.list());
  // The root is ours before anything listens; every socket is bound (and refused, if it must be) before any job
  // of the last run starts again: a mistake never becomes a restart loop that relaunches jobs.
  service.claimRoot();
  const port = new SharedMigrationPort({ ...(listen ? { listen } : { fd: fds.migration! }), ...(tls ? { tls } : {}), log, events: nullEvents });
  const bound = await port.listen().catch((e: unknown) => {
    throw listen ? listenFailure(e, listen, '--listen') : e;
  });
  // A port systemd handed over is held to the same rule, once its address is known (before anything is served).
  if (!listen && !plaintextAllowed && !isLoopback(bound.host)) {
    port.close();
    throw offLoopback('the migration socket systemd passed (migration)', bound, migrationFix);
  }
  const control = await startControlApi({ ...(fds.control === undefined ? { path: controlPath } : { fd: fds.control }), service, log });
  const metricsServer =
    fds.metrics !== undefined || metricsListen
      ? await startMetricsServer({ ...(metricsListen ? { listen: metricsListen } : { fd: fds.metrics! }), ...(tls ? { tls } : {}), metrics, log } as Parameters<typeof startMetricsServer>[0])
      : null;
  const stopped = new Promise<NodeJS.Signals>((resolveStop) => {
    process.once('SIGTERM', () => resolveStop('SIGTERM'));
    process.once('SIGINT', () => resolveStop('SIGINT'));
  });
  await service.start();
  log.info({ root, migrationPort: bound, control: fds.control === undefined ? controlPath : 'fd', metrics: metricsServer?.address ?? null, maxJobs, maxBandwidth }, 'service ready');

  const signal = await stopped;
  log.info({ signal }, 'stopping: running jobs resume at the next start with this root (a source job before cut-over rolls back, its guest stays here)');
  await control.close();
  await metricsServer?.close();
  await service.close();
  port.close();
  return EXIT.OK;
}

/** A plain-text listener is for this host only: an address (or a name resolving to one) others can reach is refused. */
function offLoopback(what: string, ep: Endpoint, fix: string): UsageError {
  return new UsageError('PC_ERR_USAGE', `${what} ${ep.host}:${ep.port} is reachable from other hosts without TLS: ${fix}; nothing was started`);
}
