// `postcopy dest`: listen for the source, receive the guest, pull the disk, serve it as an NBD export if asked.
import { join } from 'node:path';
import { createRootLogger, type Logger } from '../common/logger.js';
import type { FallbackSource } from '../dest/fetcher.js';
import { NbdSourceImage } from '../nbd/nbd-source-image.js';
import { parseNbdUri } from '../nbd/uri.js';
import { FileImage } from '../image/file-image.js';
import { isNbdUri } from '../nbd/uri.js';
import { NBD_MAX_STRING } from '../nbd/constants.js';
import { JsonLinesEvents } from '../common/events.js';
import { PostcopyError, UsageError } from '../common/errors.js';
import { parseHostPort, type TlsFiles } from '../link/connect.js';
import { DestAgent, DestRolledBackError } from '../dest/dest-agent.js';
import { planStart } from '../dest/dest-session.js';
import { DEFAULT_MAX_STREAM_WINDOW_BYTES } from '../dest/constants.js';
import { FINAL_CHECK_MODES, type FinalCheckMode } from '../dest/block-store.js';
import type { SimGuest } from '../guest/sim-guest.js';
import { AGENT_OPTIONS, PROGRESS_HELP, parseCommandArgs, progressInterval, optional, readTicket, required } from './args.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { exitCodeFor } from './failure.js';
import { checkAgentOptions, checkExistingSocket, checkImagePath, checkPortFree, checkReadableImage, checkSocketPath, checkStateDir, checkWritableFile, holdPort, listenFailure } from './preflight.js';
import { restoreGuest } from './guest-factory.js';
import { DEST_SIDE, type DestSample } from './progress.js';
import { openProgressView, type ProgressView } from './terminal.js';
import { parseIntArg, parseSize } from './sizes.js';
import { NBD_EXPORT_HELP, NBD_EXPORT_OPTIONS, ownedExport, parseExportOptions } from './nbd-export.js';
import { destQemu } from '../hypervisor/cli-options.js';
import type { QemuDestMigrator } from '../hypervisor/qemu-dest.js';

type Values = Record<string, string | boolean | undefined>;

/** Background-stream bytes in flight: at least one smallest block, at most what a sane link could want. */
const MIN_BULK_WINDOW = 4096;
const MAX_BULK_WINDOW = 2 ** 30;

export const DEST_HELP = `Usage: postcopy dest --listen HOST:PORT --image PATH --ticket-file F [options]

Wait for a source to connect, take over its guest, and pull its disk into PATH.

  --listen HOST:PORT      migration socket to listen on (port 0 picks one; see the 'listening' event)
  --image PATH            destination image (created sparse at Prepare, 0600); an existing non-empty
                          file is refused unless it is this --state-dir's session's image
  --force                 overwrite an existing non-empty --image (never the source's own image)
  --ticket-file F         shared secret (first line); optional 'expires=ISO-8601' line
  --state-dir DIR         bitmap and session state (default: PATH.state); reuse it to resume after a restart
  --nbd-listen HOST:PORT  serve the migrating disk as an NBD export on TCP (the port is held from start)
  --nbd-socket PATH       ... and/or on a Unix socket
  --nbd-name NAME         export name (default: disk)
${NBD_EXPORT_HELP}
  --fallback URI|PATH     a replica or backup of S's image at cut-over (nbd://, nbd+unix:// or a file),
                          read for missing blocks once S has been unreachable for --fallback-after
  --fallback-after SEC    how long S may be gone before the fallback serves (default 30)
  --away-report-interval MS
                          after cut-over, while the source is away, say how many bytes exist only
                          on it and what to do, this often (default 30000)
  --confirm-timeout SEC   complete but the source did not confirm (link lost): finish anyway after this
                          long (default 60); every block is durable here by then
  --bulk-window SIZE      background-stream bytes in flight at most (4K..1G, default ${DEFAULT_MAX_STREAM_WINDOW_BYTES / 2 ** 20}M). Below it D
                          sizes the window to the path it measures (round trip x bottleneck rate) and
                          paces requests at the bottleneck's rate: nothing to set for a long link
  --final-check MODE      what D's side of the check before S retires compares: 'digest' (default), the
                          crc32 of each block as it was written; 'readback', every block read back from
                          the image once all are durable (finds later damage too; costs a full read)
  --guest qemu            take over a QEMU guest: its disk is this export, its stream is fed to a
                          destination QEMU that stays paused until Finish, then runs here
  --qemu-cmd TEMPLATE     --guest qemu: start the destination QEMU at Prepare with this shell command;
                          {export} is the NBD URI of the disk, {qmp} the QMP socket, {serial} the
                          serial log path; '-incoming defer', '-S' and a QMP socket are added if missing;
                          it may span lines (line breaks outside quotes separate arguments)
  --qmp PATH              --guest qemu: the QMP socket of a QEMU the operator started with
                          '-incoming defer' (attach instead of start), or where {qmp} is made
  --serial-log PATH       --guest qemu: value of {serial} (default: STATE-DIR/qemu-serial.log)
  --tls-cert F --tls-key F --tls-ca F
                          mutual TLS on the migration socket: our certificate and key, and the CA
                          that must have signed the peer's (all three, on both sides)
  --events FILE           append JSON-lines events (phases, progress, completion, errors)
${PROGRESS_HELP}
  --log-level LEVEL       pino level for stderr logs (default: info)

Every option is checked before anything listens: a mistake is one line on stderr and exit 2.
Without an export it exits 0 once the migration is complete; with one it keeps serving the (now local)
image until SIGTERM, then flushes and exits 0. With --qemu-cmd, once the image is complete and durable
D moves the guest's disk from the export to the image over QMP (blockdev-mirror, then job-complete) and
exits 0 with QEMU running on; if the move fails the guest stays on the export, D says why and serves
on, and each SIGTERM tries the move again.

${EXIT_HELP}`;

/** `postcopy dest`'s options (the service's `submit dest` takes them too, less those the service provides). */
export const DEST_OPTIONS = {
    ...AGENT_OPTIONS,
    ...NBD_EXPORT_OPTIONS,
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
    force: { type: 'boolean' },
    'away-report-interval': { type: 'string' },
} as const;

export async function runDest(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, DEST_OPTIONS);
  if (values.help) {
    process.stdout.write(DEST_HELP + '\n');
    return EXIT.OK;
  }
  // Every option is checked before a file is written or a port bound; from here on each path emits its exit code.
  const { logLevel, tls } = checkAgentOptions(values);
  const events = new JsonLinesEvents(optional(values, 'events'), 'dest');
  const view = openProgressView(DEST_SIDE, values.progress === true, events);
  const log = createRootLogger({ level: logLevel, name: 'postcopy-dest', above: view.logAbove });
  try {
    return await serveDest(values, await checkDestOptions(values), { log, events, tls, view });
  } catch (e) {
    view.finish(null, 'failed');
    events.emit('exit', { code: exitCodeFor('dest', e), error: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    events.close();
  }
}

type DestOptions = Awaited<ReturnType<typeof checkDestOptions>>;

/** The command line of `dest`, parsed and checked against this host (no side effects; ports are checked last, later). */
async function checkDestOptions(values: Values) {
  const listen = parseHostPort(required(values, 'listen'), '--listen');
  const imagePath = required(values, 'image');
  const ticket = readTicket(required(values, 'ticket-file'));
  const stateDir = optional(values, 'state-dir') ?? `${imagePath}.state`;
  if (Buffer.byteLength(optional(values, 'nbd-name') ?? '') > NBD_MAX_STRING) throw new UsageError('PC_ERR_USAGE', '--nbd-name is too long');
  const nbdExport = await parseExportOptions(values);
  const finalCheck = (optional(values, 'final-check') ?? 'digest') as FinalCheckMode;
  if (!FINAL_CHECK_MODES.includes(finalCheck)) {
    throw new UsageError('PC_ERR_USAGE', `--final-check must be one of ${FINAL_CHECK_MODES.join(', ')}, got '${finalCheck}'`);
  }
  const guestKind = optional(values, 'guest');
  if (guestKind !== undefined && guestKind !== 'qemu') throw new UsageError('PC_ERR_USAGE', `--guest must be 'qemu' (a simulated guest comes from the source), got '${guestKind}'`);
  if (guestKind !== 'qemu' && (values['qemu-cmd'] !== undefined || values.qmp !== undefined || values['serial-log'] !== undefined)) {
    throw new UsageError('PC_ERR_USAGE', '--qemu-cmd, --qmp and --serial-log go with --guest qemu');
  }
  const qmp = optional(values, 'qmp');
  // Attached to the operator's QEMU, its QMP socket must be there now; with --qemu-cmd, we make it.
  if (qmp !== undefined && values['qemu-cmd'] === undefined) checkExistingSocket(qmp, '--qmp');
  else if (qmp !== undefined) await checkSocketPath(qmp, '--qmp');
  const serialLog = optional(values, 'serial-log');
  if (serialLog !== undefined) checkWritableFile(serialLog, '--serial-log');
  const confirmGraceMs = parseIntArg(optional(values, 'confirm-timeout') ?? '60', '--confirm-timeout', 0, 86_400) * 1000;
  const bulkWindow = optional(values, 'bulk-window');
  const windowBytes = bulkWindow === undefined ? DEFAULT_MAX_STREAM_WINDOW_BYTES : parseSize(bulkWindow, '--bulk-window');
  if (windowBytes < MIN_BULK_WINDOW || windowBytes > MAX_BULK_WINDOW) throw new UsageError('PC_ERR_USAGE', `--bulk-window must be from 4K to 1G, got '${optional(values, 'bulk-window')}'`);
  const progressMs = progressInterval(values);
  const awayReportMs = parseIntArg(optional(values, 'away-report-interval') ?? '30000', '--away-report-interval', 10, 3_600_000);
  const force = values.force === true;
  const fallback = optional(values, 'fallback');
  if (fallback === undefined && values['fallback-after'] !== undefined) throw new UsageError('PC_ERR_USAGE', '--fallback-after goes with --fallback');
  const fallbackAfterMs = parseIntArg(optional(values, 'fallback-after') ?? '30', '--fallback-after', 0, 86_400) * 1000;
  if (fallback !== undefined) checkFallback(fallback);
  checkImagePath(imagePath);
  checkStateDir(stateDir, values['state-dir'] !== undefined ? '--state-dir' : 'state dir (default: IMAGE.state)');
  // The state dir and --image must belong together (no stale or foreign session, no file of the operator's): found
  // now, before any port is bound; the agent checks again when it starts.
  planStart({ imagePath, stateDir, force });
  return { listen, imagePath, ticket, stateDir, nbdExport, finalCheck, guestKind, serialLog, confirmGraceMs, windowBytes, progressMs, awayReportMs, force, fallback, fallbackAfterMs };
}

/** A fallback that cannot be used is found now, not when S is gone and it is needed. */
function checkFallback(where: string): void {
  if (!isNbdUri(where)) {
    checkReadableImage(where, '--fallback');
    return;
  }
  try {
    parseNbdUri(where);
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--fallback ${where}: ${(e as Error).message}`);
  }
}

async function serveDest(values: Values, o: DestOptions, io: { log: Logger; events: JsonLinesEvents; tls: TlsFiles | undefined; view: ProgressView<DestSample> }): Promise<number> {
  const { listen, imagePath, ticket, stateDir, nbdExport, finalCheck } = o;
  const { log, events, view } = io;
  const started = performance.now();
  const migrator =
    o.guestKind === 'qemu'
      ? destQemu({ qemuCmd: optional(values, 'qemu-cmd'), qmp: optional(values, 'qmp'), serialLog: o.serialLog, stateDir, hasExport: nbdExport !== undefined, log, events })
      : undefined;
  const fallback = o.fallback !== undefined ? { source: await openFallback(o.fallback, log), afterMs: o.fallbackAfterMs } : undefined;

  // Ports last, once nothing else can fail. The agent binds the migration port itself a moment later (a lost race is
  // the same one-line mistake, below); the export's port is held from now until the export binds it at Prepare.
  await checkPortFree(listen, '--listen');
  const nbdHold = nbdExport?.tcp ? await holdPort(nbdExport.tcp, '--nbd-listen') : null;

  const agent: DestAgent = new DestAgent({
    ...(migrator ? { migrator } : {}),
    listen,
    imagePath,
    stateDir,
    ticket,
    log,
    events,
    ...(io.tls ? { tls: io.tls } : {}),
    force: o.force,
    awayReportMs: o.awayReportMs,
    confirmGraceMs: o.confirmGraceMs,
    ...(fallback ? { fallback } : {}),
    streamer: { windowBytes: o.windowBytes },
    finalCheck,
    createGuest: (def, ram, state) => restoreGuest(def, ram, state, agent.store!.size, log),
    ...(nbdExport ? { export: ownedExport(nbdExport, nbdHold, log, events) } : {}),
  });

  const stop = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  try {
    await agent.start();
  } catch (e) {
    await nbdHold?.release();
    await agent.close();
    throw listenFailure(e, listen, '--listen');
  }
  const sample = () => {
    const p = agent.progress();
    events.emit('progress', p);
    return p as unknown as DestSample;
  };
  const timer = setInterval(() => view.update(sample()), o.progressMs);
  timer.unref();

  const outcome = await Promise.race([agent.done.then((r) => ({ r }), (e: unknown) => ({ e })), stop.then((sig) => ({ sig }))]);
  clearInterval(timer);
  // The state it ended in, drawn before the line ends: the last tick may be from just before the last blocks.
  view.finish(sample(), 'r' in outcome ? 'complete' : 'sig' in outcome ? 'stopped' : 'failed');
  await nbdHold?.release();
  if ('sig' in outcome) {
    log.warn({ signal: outcome.sig, phase: agent.phase }, 'stopping before the migration finished; state kept');
    // Where the guest's waits went, even for a run stopped early (the bench's no-stream runs end this way).
    if (agent.store) events.emit('stages', { demandStages: agent.store.demandStages.summary() });
    await agent.close();
    // Idle (nothing begun) or aborted (rolled back): nothing of a migration is kept here.
    const nothingKept = agent.phase === 'idle' || agent.phase === 'aborted';
    const code = nothingKept ? EXIT.ROLLED_BACK : EXIT.INTERRUPTED;
    events.emit('exit', { code, phase: agent.phase, signal: outcome.sig });
    process.stderr.write(
      nothingKept
        ? `postcopy dest: stopped by ${outcome.sig} in phase ${agent.phase}; no migration kept here, the guest (if any) stays on the source\n`
        : `postcopy dest: stopped by ${outcome.sig} in phase ${agent.phase}; state kept in ${stateDir}; restart to resume\n`,
    );
    return code;
  }
  if ('e' in outcome) {
    await agent.close();
    const msg = outcome.e instanceof Error ? outcome.e.message : String(outcome.e);
    // A state dir D cannot write is D's trouble (a rollback), not a mistake in S's request.
    const cause = outcome.e instanceof DestRolledBackError ? outcome.e.cause : null;
    const refusal = cause instanceof UsageError && cause.code !== 'PC_ERR_STATE_DIR' ? cause : null;
    if (refusal) {
      // An operator mistake in the source's request (its own image as ours): nothing was written here.
      events.emit('exit', { code: EXIT.USAGE, error: refusal.message, errorCode: refusal.code });
      process.stderr.write(`postcopy dest: refused the migration: ${refusal.message} [${refusal.code}]; nothing was written here\n`);
      return EXIT.USAGE;
    }
    const rolledBack = outcome.e instanceof DestRolledBackError;
    const code = rolledBack ? EXIT.ROLLED_BACK : EXIT.INTERNAL;
    events.emit('exit', { code, error: msg, phase: agent.phase });
    const logs = migrator?.keptLogs.length ? `; the destination QEMU's logs are kept: ${migrator.keptLogs.join(', ')}` : '';
    process.stderr.write(
      rolledBack
        ? `postcopy dest: migration rolled back (${msg}); nothing kept here, the guest stays on the source${logs}\n`
        : `postcopy dest: internal error in phase ${agent.phase} (${msg}); state kept in ${stateDir}\n`,
    );
    return code;
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
    demandLatency: store.demandLatency.summary(),
    demandStages: store.demandStages.summary(),
    path: agent.pathReport(),
    guest: guest
      ? {
          reads: guest.stats.reads,
          writes: guest.stats.writes,
          readMismatches: guest.stats.readMismatches,
          diskErrors: guest.stats.readErrors + guest.stats.writeErrors,
          readLatency: guest.latencyPercentiles(),
          writeMapEntries: guest.writeMapEntries().length,
        }
      : null,
  };
  events.emit('summary', summary);
  log.info(summary, 'migration complete');
  if (migrator?.guestOnExport) await moveGuestToImage(migrator, imagePath, log);
  else if (nbdExport) {
    log.info('migration complete; serving the local image until SIGTERM');
    await stop;
  }
  await agent.close();
  events.emit('exit', { code: EXIT.OK });
  events.close();
  return EXIT.OK;
}

/**
 * The QEMU D started ends on the local image, not on the export (which would tie the guest to this agent for its
 * whole life). A failed move leaves the guest on the export and D serving it: said plainly, and each SIGTERM or
 * SIGINT tries again; D stops only once the guest is off the export (moved, or QEMU gone). One handler holds both
 * signals for the whole time, so neither can end D while a move runs (a signal then asks for another try if it fails).
 */
async function moveGuestToImage(migrator: QemuDestMigrator, imagePath: string, log: Logger): Promise<void> {
  let asked: NodeJS.Signals | null = null;
  let wake: (() => void) | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    asked = sig;
    if (wake) wake();
    else log.info({ signal: sig }, 'the guest is being moved to the local image; this agent stops once it is off the export');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    for (;;) {
      try {
        const moved = await migrator.pivot(imagePath);
        process.stderr.write(`postcopy dest: the guest runs on ${moved.file} now (moved off the export in ${moved.durationMs} ms); QEMU runs on without this agent\n`);
        return;
      } catch (e) {
        const msg = e instanceof PostcopyError ? (e.detail ?? e.message) : e instanceof Error ? e.message : String(e);
        if (!migrator.guestOnExport) {
          // Nothing of the guest is on the export (or QEMU is gone): served until SIGTERM, as for any client.
          log.warn({ err: msg }, 'the guest is not on the export; serving it until SIGTERM');
          process.stderr.write(`postcopy dest: ${msg}; the export is served until SIGTERM\n`);
        } else {
          log.error({ err: msg }, 'the guest could not move to the local image; it stays on the export');
          process.stderr.write(
            `postcopy dest: ${msg}. The guest runs on from this export, which stays up: fix the cause, then send SIGTERM to try the move ` +
              `again (this agent exits only once the guest is off the export; SIGKILL would leave the guest without its disk)\n`,
          );
        }
      }
      if (asked === null) await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
      const sig = asked;
      asked = null;
      if (!migrator.guestOnExport) {
        log.info({ signal: sig }, 'the guest is no longer on the export (QEMU exited); stopping');
        return;
      }
      log.info({ signal: sig }, 'trying the move to the local image again');
    }
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

async function openFallback(where: string, log: Logger): Promise<FallbackSource> {
  if (!isNbdUri(where)) return FileImage.open(where);
  const { address, exportName } = parseNbdUri(where);
  return NbdSourceImage.open(address, exportName, { logger: log });
}
