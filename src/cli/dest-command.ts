// `postcopy dest`: listen for the source, receive the guest, pull the disk, serve it as an NBD export if asked.
import { join } from 'node:path';
import { createRootLogger, type Logger } from '../common/logger.js';
import type { FallbackSource } from '../dest/fetcher.js';
import { NbdSourceImage } from '../nbd/nbd-source-image.js';
import { parseNbdUri } from '../nbd/uri.js';
import { FileImage } from '../source/file-image.js';
import { JsonLinesEvents } from '../common/events.js';
import { UsageError } from '../common/errors.js';
import { loadTlsFiles, parseHostPort, type TlsFiles } from '../link/connect.js';
import { DestAgent, DestRolledBackError } from '../dest/dest-agent.js';
import { FINAL_CHECK_MODES, type BlockStore, type FinalCheckMode } from '../dest/block-store.js';
import type { SimGuest } from '../guest/sim-guest.js';
import { AGENT_OPTIONS, parseCommandArgs, optional, readTicket, required } from './args.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { restoreGuest } from './guest-factory.js';
import { ProgressBar } from './progress.js';
import { parseIntArg, parseSize } from './sizes.js';
import { startExport, type RunningExport } from './nbd-export.js';
import { destQemu } from '../hypervisor/cli-options.js';

export const DEST_HELP = `Usage: postcopy dest --listen HOST:PORT --image PATH --ticket-file F [options]

Wait for a source to connect, take over its guest, and pull its disk into PATH.

  --listen HOST:PORT      migration socket to listen on (port 0 picks one; see the 'listening' event)
  --image PATH            destination image (created sparse at Prepare, 0600); an existing non-empty
                          file is refused unless it is this --state-dir's session's image
  --force                 overwrite an existing non-empty --image (never the source's own image)
  --ticket-file F         shared secret (first line); optional 'expires=ISO-8601' line
  --state-dir DIR         bitmap and session state (default: PATH.state); reuse it to resume after a restart
  --nbd-listen HOST:PORT  serve the migrating disk as an NBD export on TCP
  --nbd-socket PATH       ... and/or on a Unix socket
  --nbd-name NAME         export name (default: disk)
  --fallback URI|PATH     a replica or backup of S's image at cut-over (nbd://, nbd+unix:// or a file),
                          read for missing blocks once S has been unreachable for --fallback-after
  --fallback-after SEC    how long S may be gone before the fallback serves (default 30)
  --away-report-interval MS
                          after cut-over, while the source is away, say how many bytes exist only
                          on it and what to do, this often (default 30000)
  --confirm-timeout SEC   complete but the source did not confirm (link lost): finish anyway after this
                          long (default 60); every block is durable here by then
  --bulk-window SIZE      background-stream bytes in flight (default 1M): larger streams faster on a
                          long link, smaller keeps demand reads from waiting behind bulk data; while
                          the guest waits on demand reads (until 100 ms after the last) it is 512K at most
  --final-check MODE      what D's side of the check before S retires compares: 'digest' (default), the
                          crc32 of each block as it was written; 'readback', every block read back from
                          the image once all are durable (finds later damage too; costs a full read)
  --guest qemu            take over a QEMU guest: its disk is this export, its stream is fed to a
                          destination QEMU that stays paused until Finish, then runs here
  --qemu-cmd TEMPLATE     --guest qemu: start the destination QEMU at Prepare with this shell command;
                          {export} is the NBD URI of the disk, {qmp} the QMP socket, {serial} the
                          serial log path; '-incoming defer', '-S' and a QMP socket are added if missing
  --qmp PATH              --guest qemu: the QMP socket of a QEMU the operator started with
                          '-incoming defer' (attach instead of start), or where {qmp} is made
  --serial-log PATH       --guest qemu: value of {serial} (default: STATE-DIR/qemu-serial.log)
  --tls-cert F --tls-key F --tls-ca F
                          mutual TLS on the migration socket: our certificate and key, and the CA
                          that must have signed the peer's (all three, on both sides)
  --events FILE           append JSON-lines events (phases, progress, completion, errors)
  --progress-interval MS  how often a progress event is written (default 500)
  --log-level LEVEL       pino level for stderr logs (default: info)

Without an export it exits 0 once the migration is complete; with one it keeps serving the (now local)
image until SIGTERM, then flushes and exits 0.

${EXIT_HELP}`;

export async function runDest(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    ...AGENT_OPTIONS,
    listen: { type: 'string' },
    image: { type: 'string' },
    'nbd-listen': { type: 'string' },
    'nbd-socket': { type: 'string' },
    'nbd-name': { type: 'string' },
    'bulk-window': { type: 'string' },
    'final-check': { type: 'string' },
    guest: { type: 'string' },
    'qemu-cmd': { type: 'string' },
    qmp: { type: 'string' },
    'serial-log': { type: 'string' },
    fallback: { type: 'string' },
    'confirm-timeout': { type: 'string' },
    'fallback-after': { type: 'string' },
    'progress-interval': { type: 'string' },
    force: { type: 'boolean' },
    'away-report-interval': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(DEST_HELP + '\n');
    return EXIT.OK;
  }
  const listen = parseHostPort(required(values, 'listen'), '--listen');
  const imagePath = required(values, 'image');
  const ticket = readTicket(required(values, 'ticket-file'));
  const stateDir = optional(values, 'state-dir') ?? `${imagePath}.state`;
  const nbdListen = optional(values, 'nbd-listen');
  const nbdSocket = optional(values, 'nbd-socket');
  const nbdName = optional(values, 'nbd-name') ?? 'disk';
  if (nbdName.length > 4096) throw new UsageError('PC_ERR_USAGE', '--nbd-name is too long');
  const log = createRootLogger({ level: optional(values, 'log-level'), name: 'postcopy-dest' });
  const events = new JsonLinesEvents(optional(values, 'events'), 'dest');
  const started = performance.now();
  const bar = new ProgressBar();
  // Set from the store-ready callback, so held in an object the compiler does not narrow.
  const exported: { current: RunningExport | null } = { current: null };

  const finalCheck = (optional(values, 'final-check') ?? 'digest') as FinalCheckMode;
  if (!FINAL_CHECK_MODES.includes(finalCheck)) {
    throw new UsageError('PC_ERR_USAGE', `--final-check must be one of ${FINAL_CHECK_MODES.join(', ')}, got '${finalCheck}'`);
  }
  const guestKind = optional(values, 'guest');
  if (guestKind !== undefined && guestKind !== 'qemu') throw new UsageError('PC_ERR_USAGE', `--guest must be 'qemu' (a simulated guest comes from the source), got '${guestKind}'`);
  if (guestKind !== 'qemu' && (values['qemu-cmd'] !== undefined || values.qmp !== undefined || values['serial-log'] !== undefined)) {
    throw new UsageError('PC_ERR_USAGE', '--qemu-cmd, --qmp and --serial-log go with --guest qemu');
  }
  const migrator =
    guestKind === 'qemu'
      ? destQemu({ qemuCmd: optional(values, 'qemu-cmd'), qmp: optional(values, 'qmp'), serialLog: optional(values, 'serial-log'), stateDir, hasExport: Boolean(nbdListen || nbdSocket), log, events })
      : undefined;

  const agent: DestAgent = new DestAgent({
    ...(migrator ? { migrator } : {}),
    listen,
    imagePath,
    stateDir,
    ticket,
    log,
    events,
    ...tlsOption(values),
    force: values.force === true,
    awayReportMs: parseIntArg(optional(values, 'away-report-interval') ?? '30000', '--away-report-interval', 10, 3_600_000),
    confirmGraceMs: parseIntArg(optional(values, 'confirm-timeout') ?? '60', '--confirm-timeout', 0, 86_400) * 1000,
    ...(await fallbackOption(values, log)),
    streamer: { windowBytes: parseSize(optional(values, 'bulk-window') ?? '1M', '--bulk-window') },
    finalCheck,
    createGuest: (def, ram, state) => restoreGuest(def, ram, state, agent.store!.size, log),
    onStoreReady: async (store: BlockStore) => {
      if (!nbdListen && !nbdSocket) return [];
      const x = await startExport(store, { tcp: nbdListen ? parseHostPort(nbdListen, '--nbd-listen') : undefined, socketPath: nbdSocket, name: nbdName, log });
      exported.current = x;
      events.emit('export', { name: nbdName, uris: x.uris });
      return x.uris;
    },
  });

  const stop = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  await agent.start();
  const timer = setInterval(() => {
    const p = agent.progress();
    events.emit('progress', p);
    bar.update(p as never);
  }, parseIntArg(optional(values, 'progress-interval') ?? '500', '--progress-interval', 10, 3_600_000));
  timer.unref();

  const outcome = await Promise.race([agent.done.then((r) => ({ r }), (e: unknown) => ({ e })), stop.then((sig) => ({ sig }))]);
  clearInterval(timer);
  bar.done();
  if ('sig' in outcome) {
    log.warn({ signal: outcome.sig, phase: agent.phase }, 'stopping before the migration finished; state kept');
    await exported.current?.close();
    await agent.close();
    const nothingKept = agent.phase === 'idle' || agent.phase === 'aborted';
    events.emit('exit', { code: nothingKept ? EXIT.ROLLED_BACK : EXIT.INTERRUPTED, phase: agent.phase });
    process.stderr.write(
      nothingKept
        ? `postcopy dest: stopped by ${outcome.sig} in phase ${agent.phase}; nothing of a migration is kept here\n`
        : `postcopy dest: stopped by ${outcome.sig} in phase ${agent.phase}; state kept in ${stateDir}; restart to resume\n`,
    );
    return nothingKept ? EXIT.ROLLED_BACK : EXIT.INTERRUPTED;
  }
  if ('e' in outcome) {
    await exported.current?.close();
    await agent.close();
    const msg = outcome.e instanceof Error ? outcome.e.message : String(outcome.e);
    const refusal = outcome.e instanceof DestRolledBackError && outcome.e.cause instanceof UsageError ? outcome.e.cause : null;
    if (refusal) {
      // An operator mistake in the source's request (its own image as ours): nothing was written here.
      events.emit('exit', { code: EXIT.USAGE, error: refusal.message, errorCode: refusal.code });
      process.stderr.write(`postcopy dest: refused the migration: ${refusal.message} [${refusal.code}]; nothing was written here\n`);
      return EXIT.USAGE;
    }
    events.emit('exit', { code: EXIT.ROLLED_BACK, error: msg });
    process.stderr.write(`postcopy dest: migration rolled back (${msg}); nothing kept here, the guest stays on the source\n`);
    return outcome.e instanceof DestRolledBackError ? EXIT.ROLLED_BACK : EXIT.INTERNAL;
  }
  const result = outcome.r;
  const guest = result.guest as SimGuest | null;
  if (guest) {
    await guest.pause();
    guest.saveWriteMap(join(stateDir, 'guest-writes.json'));
  }
  const store = agent.store!;
  const summary = {
    wallMs: Math.round(performance.now() - started),
    finishMs: result.finishMs,
    resumes: result.resumes,
    ...store.stats,
    demandLatencyMs: store.demandLatency.summary(),
    guest: guest
      ? {
          reads: guest.stats.reads,
          writes: guest.stats.writes,
          readMismatches: guest.stats.readMismatches,
          diskErrors: guest.stats.readErrors + guest.stats.writeErrors,
          readLatencyMs: guest.latencyPercentiles(),
          writeMapEntries: guest.writeMapEntries().length,
        }
      : null,
  };
  events.emit('summary', summary);
  log.info(summary, 'migration complete');
  if (nbdListen || nbdSocket) {
    log.info('migration complete; serving the local image until SIGTERM');
    await stop;
    await exported.current?.close();
  }
  await agent.close();
  events.emit('exit', { code: EXIT.OK });
  events.close();
  return EXIT.OK;
}

function tlsOption(values: Record<string, string | boolean | undefined>): { tls?: TlsFiles } {
  const tls = loadTlsFiles(optional(values, 'tls-cert'), optional(values, 'tls-key'), optional(values, 'tls-ca'));
  return tls ? { tls } : {};
}

async function fallbackOption(values: Record<string, string | boolean | undefined>, log: Logger): Promise<{ fallback?: { source: FallbackSource; afterMs: number } }> {
  const where = optional(values, 'fallback');
  if (!where) return {};
  const afterMs = parseIntArg(optional(values, 'fallback-after') ?? '30', '--fallback-after', 0, 86_400) * 1000;
  const source: FallbackSource = /^nbd(\+unix)?:\/\//.test(where)
    ? await NbdSourceImage.open(parseNbdUri(where).address, parseNbdUri(where).exportName, { logger: log })
    : FileImage.open(where);
  return { fallback: { source, afterMs } };
}
