// `postcopy source`: connect to the destination, hand over the guest, serve the disk until D is complete.
import { createRootLogger } from '../common/logger.js';
import { JsonLinesEvents } from '../common/events.js';
import { UsageError, isPostcopyError } from '../common/errors.js';
import { loadTlsFiles, parseHostPort } from '../link/connect.js';
import type { NbdSourceImage } from '../nbd/nbd-source-image.js';
import { FileImage } from '../source/file-image.js';
import { RolledBackError, SourceAgent } from '../source/source-agent.js';
import type { SimGuest } from '../guest/sim-guest.js';
import type { SimGuestSpec } from '../guest/types.js';
import type { GuestDefinition } from '../protocol/messages.js';
import { AGENT_OPTIONS, parseCommandArgs, optional, readTicket, required } from './args.js';
import { EXIT, EXIT_HELP } from './exit-codes.js';
import { checkAgentOptions } from './preflight.js';
import { parseFloatArg, parseIntArg, parseSize } from './sizes.js';

export const SOURCE_HELP = `Usage: postcopy source --connect HOST:PORT --image PATH|nbd://HOST:PORT/NAME --ticket-file F [options]

Hand the guest and its disk over to a waiting destination, then serve the blocks it has not pulled yet.

  --connect HOST:PORT     the destination's migration socket
  --image PATH|URI        raw image file, nbd://HOST[:PORT]/NAME or nbd+unix:///NAME?socket=PATH
  --ticket-file F         shared secret (same file as the destination's)
  --state-dir DIR         session state; reuse it to resume after a restart of this process
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
  --log-level LEVEL       pino level for stderr logs (default: info)

Exits 0 only after the destination said COMPLETE (image durable there) and was confirmed.

${EXIT_HELP}`;

export async function runSource(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
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
  });
  if (values.help) {
    process.stdout.write(SOURCE_HELP + '\n');
    return EXIT.OK;
  }
  checkAgentOptions(values);
  const connect = parseHostPort(required(values, 'connect'), '--connect');
  const imageArg = required(values, 'image');
  const ticket = readTicket(required(values, 'ticket-file'));
  const blockSize = parseSize(optional(values, 'block-size') ?? '64K', '--block-size');
  if (blockSize < 4096 || blockSize > 256 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
    throw new UsageError('PC_ERR_USAGE', '--block-size must be a power of two from 4K to 256K');
  }
  const maxDowntimeMs = parseIntArg(optional(values, 'max-downtime') ?? '50', '--max-downtime', 1, 600_000);
  const connectTimeoutMs = parseIntArg(optional(values, 'connect-timeout') ?? '60', '--connect-timeout', 0, 86_400) * 1000;
  const guestKind = optional(values, 'guest');
  if (guestKind !== undefined && guestKind !== 'sim' && guestKind !== 'qemu') throw new UsageError('PC_ERR_USAGE', `--guest must be 'sim' or 'qemu', got '${guestKind}'`);
  if (guestKind !== 'qemu' && (values.qmp !== undefined || values['postcopy-ram'] !== undefined)) throw new UsageError('PC_ERR_USAGE', '--qmp and --postcopy-ram go with --guest qemu');
  const tls = loadTlsFiles(optional(values, 'tls-cert'), optional(values, 'tls-key'), optional(values, 'tls-ca'));
  const log = createRootLogger({ level: optional(values, 'log-level'), name: 'postcopy-source' });
  const events = new JsonLinesEvents(optional(values, 'events'), 'source');

  const isNbd = /^nbd(\+unix)?:\/\//.test(imageArg);
  if (isNbd && guestKind === 'sim') throw new UsageError('PC_ERR_USAGE', '--guest sim needs a file image (its writes go to the image before cut-over)');
  const file = isNbd ? null : FileImage.open(imageArg, { writable: guestKind === 'sim' });
  const image = file ?? (await openNbd(imageArg, log));

  // The NBD client, the simulated guest and the QEMU adapter load only when asked for (start-up time).
  let guest: SimGuest | null = null;
  let spec: SimGuestSpec | null = null;
  let guestDefinition: GuestDefinition | null = null;
  if (guestKind === 'sim') {
    spec = {
      kind: 'sim',
      seed: parseIntArg(optional(values, 'seed') ?? '1', '--seed', 0, 0xffffffff),
      ramBytes: parseSize(optional(values, 'ram') ?? '256M', '--ram'),
      dirtyPagesPerSec: parseIntArg(optional(values, 'dirty-rate') ?? '1000', '--dirty-rate', 0, 10_000_000),
      diskOpsPerSec: parseIntArg(optional(values, 'disk-ops') ?? '200', '--disk-ops', 0, 1_000_000),
      writeRatio: parseFloatArg(optional(values, 'write-ratio') ?? '0.3', '--write-ratio', 0, 1),
      residentFraction: parseFloatArg(optional(values, 'ram-used') ?? '0.75', '--ram-used', 0, 1),
    };
    const { SimGuest } = await import('../guest/sim-guest.js');
    guest = new SimGuest(spec, { diskSize: image.size, log });
    guestDefinition = (await import('./guest-factory.js')).simGuestDefinition(spec);
  }

  // A QEMU guest writes its own image until the switch: S only reads it, after that only D's copy changes.
  const migrator =
    guestKind === 'qemu'
      ? await (await import('../hypervisor/cli-options.js')).openSourceQemu({ qmp: required(values, 'qmp'), postcopyRam: values['postcopy-ram'] === true, stateDir: optional(values, 'state-dir'), maxDowntimeMs: optional(values, 'max-downtime') ? maxDowntimeMs : undefined, log, events })
      : undefined;

  const agent = new SourceAgent({
    connect,
    ...(migrator ? { migrator } : {}),
    image,
    ...(file ? { guestDisk: file } : {}),
    guest,
    guestDefinition,
    ticket,
    ...(optional(values, 'state-dir') ? { stateDir: optional(values, 'state-dir')! } : {}),
    blockSize,
    maxDowntimeMs,
    connectTimeoutMs,
    log,
    events,
    ...(tls ? { tls } : {}),
  });
  const started = performance.now();
  try {
    const result = await agent.run();
    const summary = {
      wallMs: Math.round(performance.now() - started),
      downtimeMs: result.downtimeMs,
      precopy: result.precopy,
      blocks: result.blocks,
      reconnects: result.reconnects,
      guest: guest ? { reads: guest.stats.reads, writes: guest.stats.writes, readMismatches: guest.stats.readMismatches } : null,
      ...(migrator ? { hypervisor: migrator.stats } : {}),
    };
    events.emit('summary', summary);
    events.emit('exit', { code: EXIT.OK });
    return EXIT.OK;
  } catch (e) {
    await guest?.pause();
    const msg = isPostcopyError(e) || e instanceof Error ? e.message : String(e);
    if (e instanceof RolledBackError && e.cause instanceof UsageError) {
      // The destination refused an operator mistake (our image as its image) before anything started.
      events.emit('exit', { code: EXIT.USAGE, error: e.cause.message, errorCode: e.cause.code });
      process.stderr.write(`postcopy source: the destination refused the migration: ${e.cause.message} [${e.cause.code}]; nothing changed on either side, the guest stays here\n`);
      return EXIT.USAGE;
    }
    if (e instanceof RolledBackError) {
      const notStarted = agent.failedInPhase === 'connecting';
      const code = notStarted ? EXIT.NOT_STARTED : EXIT.ROLLED_BACK;
      events.emit('exit', { code, error: msg, failedInPhase: agent.failedInPhase });
      process.stderr.write(
        notStarted
          ? `postcopy source: could not start (${msg}); nothing changed on either side, the guest stays here\n`
          : `postcopy source: rolled back in phase ${agent.failedInPhase} (${msg}); the guest stays here, the destination discards its copy\n`,
      );
      return code;
    }
    throw e;
  } finally {
    migrator?.close();
    events.close();
  }
}

async function openNbd(uri: string, log: import('../common/logger.js').Logger): Promise<NbdSourceImage> {
  const [{ NbdSourceImage }, { parseNbdUri }] = await Promise.all([import('../nbd/nbd-source-image.js'), import('../nbd/uri.js')]);
  const parsed = parseNbdUri(uri);
  return NbdSourceImage.open(parsed.address, parsed.exportName, { logger: log });
}
