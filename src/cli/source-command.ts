// `postcopy source`: connect to the destination, hand over the guest, serve the disk until D is complete.
import { createRootLogger } from '../common/logger.js';
import { JsonLinesEvents } from '../common/events.js';
import { UsageError, isPostcopyError } from '../common/errors.js';
import { parseHostPort } from '../link/connect.js';
import { deferred } from '../common/deferred.js';
import { imageIdentity, defaultSourceStateDir } from '../source/source-state.js';
import { openImageFile, openImageNbd } from '../source/source-image-open.js';
import { isNbdUri } from '../nbd/uri.js';
import { isValidBlockSize } from '../protocol/geometry.js';
import { shellQuote } from '../common/shell.js';
import { RolledBackError, SourceAgent } from '../source/source-agent.js';
import type { SimGuest } from '../guest/sim-guest.js';
import type { SimGuestSpec } from '../guest/types.js';
import type { GuestDefinition } from '../protocol/messages.js';
import { AGENT_OPTIONS, PROGRESS_HELP, parseCommandArgs, optional, progressInterval, readTicket, required } from './args.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { exitCodeFor } from './failure.js';
import { checkAgentOptions, checkStateDir } from './preflight.js';
import { formatBytes, parseFloatArg, parseIntArg, parseSize } from './sizes.js';
import { SOURCE_SIDE } from './progress.js';
import { openProgressView } from './terminal.js';

export const SOURCE_HELP = `Usage: postcopy source --connect HOST:PORT --image PATH|nbd://HOST:PORT/NAME --ticket-file F [options]

Hand the guest and its disk over to a waiting destination, then serve the blocks it has not pulled yet.

  --connect HOST:PORT     the destination's migration socket
  --image PATH|URI        raw image file, nbd://HOST[:PORT]/NAME or nbd+unix:///NAME?socket=PATH
  --ticket-file F         shared secret (same file as the destination's)
  --state-dir DIR         session state (0700), kept until the destination confirmed; reuse it to resume
                          after a restart of this process (default: PATH.source-state beside a file
                          image; for an NBD image \$XDG_STATE_HOME/postcopy/source/URI-HASH, by default
                          ~/.local/state/postcopy/source/...)
  --block-size SIZE       migration block size, power of two 4K..256K (default 64K)
  --max-downtime MS       cut over once the remaining dirty RAM fits this budget (default 50)
  --connect-timeout SEC   give up reaching the destination before anything started (default 60)
  --guest sim             run the built-in simulated guest here (default: none; a real hypervisor's
                          guest reaches its disk through the destination's NBD export)
  --guest qemu            migrate the running QEMU guest whose disk is --image: its own migration
                          stream is carried over the migration socket; after Confirm it is quit
  --qmp PATH              --guest qemu: the source QEMU's QMP Unix socket
  --postcopy-ram          --guest qemu: QEMU's post-copy of RAM (switches at once; the destination
                          QEMU stays paused until all RAM is in, then Finish runs it)
  --ram SIZE              simulated guest RAM (default 256M)
  --dirty-rate N          simulated guest: RAM pages dirtied per second (default 1000)
  --disk-ops N            simulated guest: disk operations per second (default 200)
  --write-ratio X         simulated guest: fraction of disk operations that write (default 0.3)
  --ram-used X            simulated guest: fraction of RAM in use at start (default 0.75)
  --seed N                simulated guest: seed (default 1)
  --tls-cert F --tls-key F --tls-ca F
                          mutual TLS on the migration socket: our certificate and key, and the CA
                          that must have signed the peer's (all three, on both sides)
  --events FILE           append JSON-lines events
${PROGRESS_HELP}
  --log-level LEVEL       pino level for stderr logs (default: info)

Exits 0 only after the destination said COMPLETE (image durable there) and was confirmed.
Ctrl-C or SIGTERM before cut-over aborts the migration (the guest goes on here) and exits 3; after
cut-over this process holds the only copy of the blocks the destination still needs, so the first
signal is refused (said on stderr) and a second one exits 5, keeping the state dir for a resume.

${EXIT_HELP}`;

/** `postcopy source`'s options (the service's `submit source` takes them too, less those the service provides). */
export const SOURCE_OPTIONS = {
    ...AGENT_OPTIONS,
    connect: { type: 'string' },
    image: { type: 'string' },
    'block-size': { type: 'string' },
    'max-downtime': { type: 'string' },
    'connect-timeout': { type: 'string' },
    guest: { type: 'string' },
    qmp: { type: 'string' },
    'postcopy-ram': { type: 'boolean' },
    ram: { type: 'string' },
    'dirty-rate': { type: 'string' },
    'disk-ops': { type: 'string' },
    'write-ratio': { type: 'string' },
    'ram-used': { type: 'string' },
    seed: { type: 'string' },
} as const;

export async function runSource(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, SOURCE_OPTIONS);
  if (values.help) {
    process.stdout.write(SOURCE_HELP + '\n');
    return EXIT.OK;
  }
  // Every option is checked before anything is opened or reached (one line, exit 2).
  const { logLevel, tls } = checkAgentOptions(values);
  const connect = parseHostPort(required(values, 'connect'), '--connect');
  const imageArg = required(values, 'image');
  const ticket = readTicket(required(values, 'ticket-file'));
  const blockSize = parseSize(optional(values, 'block-size') ?? '64K', '--block-size');
  if (!isValidBlockSize(blockSize)) {
    throw new UsageError('PC_ERR_USAGE', '--block-size must be a power of two from 4K to 256K');
  }
  const maxDowntimeMs = parseIntArg(optional(values, 'max-downtime') ?? '50', '--max-downtime', 1, 600_000);
  const connectTimeoutMs = parseIntArg(optional(values, 'connect-timeout') ?? '60', '--connect-timeout', 0, 86_400) * 1000;
  const progressMs = progressInterval(values);
  const guestKind = optional(values, 'guest');
  if (guestKind !== undefined && guestKind !== 'sim' && guestKind !== 'qemu') throw new UsageError('PC_ERR_USAGE', `--guest must be 'sim' or 'qemu', got '${guestKind}'`);
  if (guestKind !== 'qemu' && (values.qmp !== undefined || values['postcopy-ram'] !== undefined)) throw new UsageError('PC_ERR_USAGE', '--qmp and --postcopy-ram go with --guest qemu');
  const isNbd = isNbdUri(imageArg);
  if (isNbd && guestKind === 'sim') throw new UsageError('PC_ERR_USAGE', '--guest sim needs a file image (its writes go to the image before cut-over)');
  const spec: SimGuestSpec | null = guestKind === 'sim' ? simSpec(values) : null;
  const stateDirArg = optional(values, 'state-dir');
  const stateDir = stateDirArg ?? defaultSourceStateDir(imageArg, isNbd);
  checkStateDir(stateDir, stateDirArg !== undefined ? '--state-dir' : 'state dir (default)');
  const events = new JsonLinesEvents(optional(values, 'events'), 'source');
  const view = openProgressView(SOURCE_SIDE, values.progress === true, events);
  const log = createRootLogger({ level: logLevel, name: 'postcopy-source', above: view.logAbove });
  try {
    return await migrate();
  } catch (e) {
    view.finish(null, 'failed');
    // Whatever reaches main is reported there; the event says the same code the process exits with.
    events.emit('exit', { code: exitCodeFor('source', e), error: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    events.close();
  }

  async function migrate(): Promise<number> {
    // The image is checked (and an NBD export reached) before the destination is contacted.
    const file = isNbd ? null : openImageFile(imageArg, { writable: guestKind === 'sim', log });
    const image = file ?? (await openImageNbd(imageArg, log));

    // The simulated guest and the QEMU adapter load only when asked for (start-up time).
    let guest: SimGuest | null = null;
    let guestDefinition: GuestDefinition | null = null;
    if (spec) {
      const { SimGuest } = await import('../guest/sim-guest.js');
      guest = new SimGuest(spec, { diskSize: image.size, log });
      guestDefinition = (await import('./guest-factory.js')).simGuestDefinition(spec);
    }

    // A QEMU guest writes its own image until the switch: S only reads it, after that only D's copy changes.
    const migrator =
      guestKind === 'qemu'
        ? await (await import('../hypervisor/cli-options.js')).openSourceQemu({ qmp: required(values, 'qmp'), postcopyRam: values['postcopy-ram'] === true, stateDir: stateDirArg, maxDowntimeMs: optional(values, 'max-downtime') ? maxDowntimeMs : undefined, log, events })
        : undefined;

    const agent = new SourceAgent({
      connect,
      ...(migrator ? { migrator } : {}),
      image,
      ...(file ? { guestDisk: file } : {}),
      guest,
      guestDefinition,
      ticket,
      stateDir,
      stateDirIsDefault: stateDirArg === undefined,
      imageLabel: imageIdentity(imageArg, isNbd),
      blockSize,
      maxDowntimeMs,
      connectTimeoutMs,
      log,
      events,
      ...(tls ? { tls } : {}),
    });
    const notice = new AfterCutoverNotice(agent, stateDir, stateDirArg === undefined);
    const stopped = deferred<NodeJS.Signals>();
    let abortedBy: NodeJS.Signals | null = null;
    let refused = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (abortedBy) return;
      if (agent.abort(`stopped by ${sig} on the source`)) {
        abortedBy = sig;
        log.warn({ signal: sig, phase: agent.phase }, 'stopping before cut-over: aborting the migration');
        return;
      }
      if (!agent.pastCutover) return; // rolling back or confirmed already: on its way out
      if (refused) {
        stopped.resolve(sig);
        return;
      }
      // After cut-over this process holds the only copy of the blocks D still needs: going away needs a second ask.
      refused = true;
      const bytes = agent.bytesOnlyHere;
      log.warn({ signal: sig, phase: agent.phase, bytesOnlySource: bytes }, 'stop refused after cut-over');
      events.emit('signal', { signal: sig, action: 'refused', phase: agent.phase, bytesOnlySource: bytes });
      view.say(`postcopy source: ${sig} refused: ${notice.where()}; send it again to stop anyway (state kept for a resume)`);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    const started = performance.now();
    const sample = () => {
      const p = agent.progress();
      events.emit('progress', p);
      return p;
    };
    const timer = setInterval(() => view.update(sample()), progressMs);
    timer.unref();
    try {
      const outcome = await Promise.race([agent.run().then((r) => ({ r }), (e: unknown) => ({ e })), stopped.promise.then((sig) => ({ sig }))]);
      clearInterval(timer);
      // The state it ended in, drawn before the line ends (D's COMPLETE: nothing is only here any more).
      view.finish(sample(), 'r' in outcome ? 'complete' : 'sig' in outcome || abortedBy ? 'stopped' : 'failed');
      if ('r' in outcome) {
        const result = outcome.r;
        const summary = {
          wallMs: Math.round(performance.now() - started),
          downtimeMs: result.downtimeMs,
          precopy: result.precopy,
          blocks: result.blocks,
          urgentStages: result.urgentStages,
          reconnects: result.reconnects,
          guest: guest ? { reads: guest.stats.reads, writes: guest.stats.writes, readMismatches: guest.stats.readMismatches } : null,
          ...(migrator ? { hypervisor: migrator.stats } : {}),
        };
        events.emit('summary', summary);
        events.emit('exit', { code: EXIT.OK });
        return EXIT.OK;
      }
      await guest?.pause();
      if ('sig' in outcome) {
        await agent.close();
        events.emit('stages', { urgentStages: agent.urgentStages });
        return notice.exit(events, `stopped by ${outcome.sig} after cut-over with the migration unfinished`, { signal: outcome.sig });
      }
      const e = outcome.e;
      const msg = e instanceof Error ? e.message : String(e);
      if (e instanceof RolledBackError && e.cause instanceof UsageError) {
        // The destination refused an operator mistake (our image as its image) before anything started.
        events.emit('exit', { code: EXIT.USAGE, error: e.cause.message, errorCode: e.cause.code });
        process.stderr.write(`postcopy source: the destination refused the migration: ${e.cause.message} [${e.cause.code}]; nothing changed on either side, the guest stays here\n`);
        return EXIT.USAGE;
      }
      if (e instanceof RolledBackError) {
        const notStarted = agent.failedInPhase === 'connecting' && !abortedBy;
        const code = notStarted ? EXIT.NOT_STARTED : EXIT.ROLLED_BACK;
        events.emit('exit', { code, error: msg, failedInPhase: agent.failedInPhase, ...(abortedBy ? { signal: abortedBy } : {}) });
        process.stderr.write(
          abortedBy
            ? `postcopy source: stopped by ${abortedBy} before cut-over; the migration is aborted, the guest stays here${agent.failedInPhase === 'connecting' ? ' (nothing was started on the destination)' : ' and the destination discards its copy'}\n`
            : notStarted
              ? `postcopy source: could not start (${msg}); this run started nothing on either side${/already in progress/.test(msg) ? notice.busyHint() : ''}\n`
              : `postcopy source: rolled back in phase ${agent.failedInPhase} (${msg}); the guest stays here, the destination discards its copy\n`,
        );
        return code;
      }
      if (agent.pastCutover) {
        await agent.close();
        // A destination that does not know the session may have finished without us (--fallback): say how to start anew.
        const unknown = isPostcopyError(e) && e.code === 'PC_ERR_AUTH' ? `; if that migration ended without this source, remove ${stateDir} to start a new one` : '';
        return notice.exit(events, `stopped after cut-over with the migration unfinished (${msg}${unknown})`, {});
      }
      throw e;
    } finally {
      clearInterval(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      migrator?.close();
    }
  }
}

/** The truth after cut-over, said the same way in every message: where the guest runs, what only S has, how to go on. */
class AfterCutoverNotice {
  readonly #agent: SourceAgent;
  readonly #stateDir: string;
  readonly #stateDirIsDefault: boolean;

  constructor(agent: SourceAgent, stateDir: string, stateDirIsDefault: boolean) {
    this.#agent = agent;
    this.#stateDir = stateDir;
    this.#stateDirIsDefault = stateDirIsDefault;
  }

  /** Where the guest runs and what exists only here. */
  where(): string {
    const bytes = this.#agent.bytesOnlyHere;
    return `the guest runs on the destination, and up to ${bytes} bytes (${formatBytes(bytes)}) of its disk exist only here`;
  }

  /** The same command line, with the state dir made explicit: it resumes the session. */
  resumeCommand(): string {
    const args = process.argv.slice(1).map(shellQuote);
    if (this.#stateDirIsDefault) args.push('--state-dir', shellQuote(this.#stateDir));
    return args.join(' ');
  }

  /** Report an unfinished stop after cut-over; the state dir is kept. */
  exit(events: JsonLinesEvents, what: string, fields: Record<string, unknown>): number {
    const bytes = this.#agent.bytesOnlyHere;
    events.emit('exit', { code: EXIT.INTERRUPTED, phase: this.#agent.phase, bytesOnlySource: bytes, stateDir: this.#stateDir, resume: this.resumeCommand(), ...fields });
    process.stderr.write(
      `postcopy source: ${what}; ${this.where()}; state kept in ${this.#stateDir}; resume with: ${this.resumeCommand()}` +
        ` (or, if this host cannot come back, restart the destination with --fallback naming a copy of this image)\n`,
    );
    return EXIT.INTERRUPTED;
  }

  busyHint(): string {
    return `; the destination is busy with another migration session (if it is this guest's, the guest runs there: resume it with that run's --state-dir)`;
  }
}

function simSpec(values: Record<string, string | boolean | undefined>): SimGuestSpec {
  return {
    kind: 'sim',
    seed: parseIntArg(optional(values, 'seed') ?? '1', '--seed', 0, 0xffffffff),
    ramBytes: parseSize(optional(values, 'ram') ?? '256M', '--ram'),
    dirtyPagesPerSec: parseIntArg(optional(values, 'dirty-rate') ?? '1000', '--dirty-rate', 0, 10_000_000),
    diskOpsPerSec: parseIntArg(optional(values, 'disk-ops') ?? '200', '--disk-ops', 0, 1_000_000),
    writeRatio: parseFloatArg(optional(values, 'write-ratio') ?? '0.3', '--write-ratio', 0, 1),
    residentFraction: parseFloatArg(optional(values, 'ram-used') ?? '0.75', '--ram-used', 0, 1),
  };
}
