// D's side of a QEMU guest: starts the destination QEMU (or attaches to one waiting with -incoming defer),
// feeds it the stream with migrate-incoming, and keeps its guest paused until Finish says `cont`.
import type { Socket } from 'node:net';
import { closeSync, constants, lstatSync, openSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import type { EventSink } from '../common/events.js';
import { fdIdentity, sameFile, type FileIdentity } from '../common/image-identity.js';
import type { Logger } from '../common/logger.js';
import type { DestGuestMigrator, GuestStreamChannel } from '../guest/migrator.js';
import type { GuestDefinition } from '../protocol/messages.js';
import { checkSocketPath } from '../nbd/socket-file.js';
import { HypervisorError, hypervisorWait } from './errors.js';
import { connectUnixSocket } from './unix-socket.js';
import { UsageError } from '../common/errors.js';
import { PRIVATE_FILE_MODE } from '../common/constants.js';
import { QmpClient } from './qmp-client.js';
import { MIGRATION_FAILED, migrationCapabilities, queryMigrate } from './qemu-migration.js';
import { expandTemplate, lastLines, spawnQemu, type QemuProcess } from './qemu-process.js';
import { relay, type Relay } from './stream-relay.js';
import { NotOnExportError, pivotToLocal, type PivotResult } from './qemu-pivot.js';

/** A QEMU just started needs a few seconds to open its QMP socket; longer means it is not coming. */
const QMP_CONNECT_TIMEOUT_MS = 15_000;
/** How long a failed QMP call waits for QEMU's exit, to tell its death rather than a bare socket error. */
const EXIT_GRACE_MS = 1000;
/** `cont` answers at once; the RESUME event follows within this when the guest really runs. */
const RESUME_TIMEOUT_MS = 10_000;
/** migrate-incoming's socket appears within this after the command; past it, QEMU did not open it. */
const INCOMING_SOCKET_WAIT_MS = 10_000;
/** Poll interval for that socket: short, the wait is normally a few milliseconds. */
const INCOMING_SOCKET_POLL_MS = 20;
/** How often the incoming migration's status is asked while the stream arrives: short, the guest waits on it. */
const MIGRATION_POLL_MS = 20;

export interface QemuDestOptions {
  /** Command template to start QEMU with ({export}, {qmp}, {serial}); without it, attach to `qmpPath`. */
  command?: string;
  /** QMP socket: the operator's QEMU's (attach), or where the started QEMU makes it. */
  qmpPath: string;
  /** The guest's serial console log, for {serial}. */
  serialPath: string;
  /** Where the incoming migration socket and QEMU's own log go. */
  runDir: string;
  log: Logger;
  events: EventSink;
}

export class QemuDestMigrator implements DestGuestMigrator {
  readonly #o: QemuDestOptions;
  readonly #log: Logger;
  #proc: QemuProcess | null = null;
  #qmp: QmpClient | null = null;
  #incoming = '';
  #postcopyRam = false;
  #relay: Relay | null = null;
  #started = false;
  /** The serial log as this session created it (null: it was the operator's, or not made yet): only that one is removed. */
  #serialCreated: FileIdentity | null = null;
  /** The QMP socket path was free or held a stale socket when QEMU was started: a rollback may remove what QEMU left. */
  #qmpOurs = false;
  /** QEMU's own stderr log (the started QEMU's), kept after a rollback. */
  #logPath: string | null = null;
  /** The export URI the started QEMU was given as its disk. */
  #exportUri = '';
  /** Where a rollback left QEMU's logs, for the operator (empty until a rollback). */
  #keptLogs: string[] = [];

  constructor(opts: QemuDestOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ hypervisor: 'qemu', side: 'dest' });
  }

  /** The started QEMU's pid (null when attached to the operator's). */
  get pid(): number | null {
    return this.#proc?.pid ?? null;
  }

  async prepare(definition: GuestDefinition, exportUris: string[]): Promise<void> {
    const kind = (definition.persistent as { kind?: unknown }).kind;
    if (kind !== 'qemu') throw new HypervisorError('PC_ERR_HYPERVISOR', `guest kind '${String(kind)}' is not a QEMU guest`);
    this.#postcopyRam = (definition.persistent as { postcopyRam?: unknown }).postcopyRam === true;
    if (this.#o.command) {
      // A unix socket is the cheaper path for a QEMU on this host.
      const uri = exportUris.find((u) => u.startsWith('nbd+unix:')) ?? exportUris[0];
      if (!uri) throw new UsageError('PC_ERR_USAGE', '--guest qemu with --qemu-cmd needs an NBD export (--nbd-socket or --nbd-listen)');
      // Only nothing or a stale socket (no one answers) is replaced; anything else at --qmp is the operator's.
      if ((await checkSocketPath(this.#o.qmpPath, '--qmp')) === 'stale') unlinkSync(this.#o.qmpPath);
      this.#qmpOurs = true;
      this.#exportUri = uri;
      const cmd = expandTemplate(this.#o.command, { export: uri, qmp: this.#o.qmpPath, serial: this.#o.serialPath });
      const logPath = join(this.#o.runDir, 'qemu-dest.log');
      this.#logPath = logPath;
      this.#createSerialLog();
      this.#proc = spawnQemu(cmd, logPath);
      this.#log.info({ pid: this.#proc.pid, cmd, log: logPath }, 'destination QEMU started');
      this.#o.events.emit('hypervisor', { side: 'dest', state: 'started', pid: this.#proc.pid, qmp: this.#o.qmpPath, serial: this.#o.serialPath });
      const proc = this.#proc;
      void proc.exited.then(({ code, signal }) => {
        this.#log.info({ code, signal }, 'destination QEMU exited');
        this.#o.events.emit('hypervisor', { side: 'dest', state: 'exited', code, signal });
      });
    }
    const qmp = await this.#connect();
    const status = await qmp.execute<{ status: string }>('query-status');
    if (status.status !== 'inmigrate') {
      throw new HypervisorError('PC_ERR_HYPERVISOR', `the destination QEMU is ${status.status}, not waiting for a migration (start it with -incoming defer)`);
    }
    // While incoming, `stop` clears QEMU's autostart: the loaded guest stays paused until our `cont`, so D can
    // still answer "not running" after the stream is in (the Finish rule), even without -S on the command line.
    await qmp.execute('stop');
    await qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(this.#postcopyRam) });
    this.#incoming = join(this.#o.runDir, `qemu-incoming-${process.pid}.sock`);
    rmSync(this.#incoming, { force: true });
    await qmp.execute('migrate-incoming', { uri: `unix:${this.#incoming}` });
    this.#log.info({ socket: this.#incoming, postcopyRam: this.#postcopyRam }, 'destination QEMU waiting for the stream');
  }

  /**
   * The guest's console may show its secrets: created private here, before QEMU opens it. An existing file (the
   * operator's console log) keeps its mode and is never removed; a symlink there is not followed.
   */
  #createSerialLog(): void {
    let fd: number;
    try {
      fd = openSync(this.#o.serialPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, PRIVATE_FILE_MODE);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw e;
    }
    try {
      this.#serialCreated = fdIdentity(fd);
    } finally {
      closeSync(fd);
    }
  }

  async #connect(): Promise<QmpClient> {
    const proc = this.#proc;
    try {
      this.#qmp = await QmpClient.connect(this.#o.qmpPath, { timeoutMs: QMP_CONNECT_TIMEOUT_MS, alive: () => proc?.alive ?? true });
    } catch (e) {
      if (proc && !proc.alive) {
        const { code, signal } = await proc.exited;
        throw new HypervisorError('PC_ERR_HYPERVISOR', `the destination QEMU exited at start (${signal ? `killed by ${signal}` : `exit code ${code}`}): ${this.#lastWords(proc)}`);
      }
      throw e;
    }
    this.#qmp.on('close', (err) => {
      if (!this.#started) this.#log.warn({ err: err?.message }, 'QMP connection to the destination QEMU closed');
    });
    return this.#qmp;
  }

  /**
   * QEMU's last words: its stderr, else the guest console's last lines (a QEMU that booted without its disk exits
   * quietly; the guest said so on its console).
   */
  #lastWords(proc: QemuProcess, none = 'no message'): string {
    const own = proc.lastError();
    if (own) return own;
    const console = lastLines(this.#o.serialPath);
    return console ? `guest console: ${console}` : none;
  }

  async receive(channel: GuestStreamChannel): Promise<void> {
    try {
      await this.#receive(channel);
    } catch (e) {
      throw await this.#explain(e);
    }
  }

  /** A QMP failure because QEMU died is better told as QEMU's death, with its last words. */
  async #explain(e: unknown): Promise<unknown> {
    const proc = this.#proc;
    if (!proc) return e;
    const exit = await hypervisorWait(proc.exited, EXIT_GRACE_MS, 'QEMU still running').catch(() => null);
    if (!exit) return e;
    const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    const words = this.#lastWords(proc, '');
    return new HypervisorError('PC_ERR_HYPERVISOR', `the destination QEMU exited (${how})${words ? `: ${words}` : ''}`, { cause: e });
  }

  async #receive(channel: GuestStreamChannel): Promise<void> {
    const qmp = this.#qmp!;
    const socket = await openIncoming(this.#incoming);
    this.#relay = relay(socket, channel, { endOnClose: false });
    let relayError: Error | null = null;
    this.#relay.done.catch((e: Error) => (relayError = e));
    for (;;) {
      if (this.#proc && !this.#proc.alive) throw new HypervisorError('PC_ERR_HYPERVISOR', `the destination QEMU exited: ${this.#lastWords(this.#proc)}`);
      const info = await queryMigrate(qmp);
      if (MIGRATION_FAILED.has(info.status ?? '')) {
        throw new HypervisorError('PC_ERR_HYPERVISOR', `destination QEMU could not load the guest: ${(this.#proc && this.#lastWords(this.#proc, '')) || info.status}`);
      }
      const run = await qmp.execute<{ status: string }>('query-status');
      // Loaded and paused: `completed` means all of RAM and the device state are in (post-copy RAM too).
      if (info.status === 'completed' && run.status !== 'inmigrate') {
        this.#log.info({ migration: info.status, status: run.status }, 'destination QEMU has the guest, paused');
        channel.end();
        return;
      }
      if (relayError && info.status !== 'completed') throw new HypervisorError('PC_ERR_HYPERVISOR', `migration stream broken: ${(relayError as Error).message}`);
      await new Promise((res) => setTimeout(res, MIGRATION_POLL_MS));
    }
  }

  async start(): Promise<void> {
    const qmp = this.#qmp!;
    const resumed = qmp.waitEvent('RESUME');
    resumed.catch(() => {});
    try {
      await qmp.execute('cont');
      await hypervisorWait(resumed, RESUME_TIMEOUT_MS, 'the destination QEMU did not resume');
    } catch (e) {
      throw await this.#explain(e);
    }
    this.#started = true;
    this.#log.info('destination QEMU running the guest');
    this.#o.events.emit('hypervisor', { side: 'dest', state: 'running' });
  }

  async abort(): Promise<void> {
    this.#relay?.destroy(new Error('migration aborted'));
    if (this.#proc) {
      await this.#proc.kill();
      this.#log.warn({ pid: this.#proc.pid }, 'destination QEMU killed');
    } else if (this.#qmp && !this.#qmp.closed) {
      // The operator's QEMU holds a half-loaded guest: it must not run; quitting it is the only safe end.
      await this.#qmp.execute('quit').catch(() => {});
      this.#log.warn('destination QEMU told to quit');
    }
    this.#qmp?.close();
    rmSync(this.#incoming || join(this.#o.runDir, 'none'), { force: true });
    if (this.#qmpOurs && (await checkSocketPath(this.#o.qmpPath, '--qmp').catch(() => 'kept')) === 'stale') rmSync(this.#o.qmpPath, { force: true });
    this.#keepLogs();
    this.#o.events.emit('hypervisor', { side: 'dest', state: 'killed', logs: this.#keptLogs });
  }

  /**
   * Why QEMU failed is in its logs (a guest that found no disk says so only on its console): a rollback keeps them.
   * The ones this session created are renamed aside with the time, so the next attempt neither appends to them nor
   * takes the console log for the operator's; the operator's own --serial-log stays where it is.
   */
  #keepLogs(): void {
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const aside = (path: string): string => join(dirname(path), `${basename(path, extname(path))}.rolled-back-${stamp}${extname(path)}`);
    const kept: string[] = [];
    const serialOurs = this.#serialCreated !== null && sameFile(lstatIdentity(this.#o.serialPath), this.#serialCreated);
    for (const [path, ours] of [[this.#logPath, true], [this.#o.serialPath, serialOurs]] as const) {
      if (!path || !lstatIdentity(path)) continue;
      if (!ours) {
        kept.push(path);
        continue;
      }
      try {
        renameSync(path, aside(path));
        kept.push(aside(path));
      } catch (e) {
        this.#log.warn({ err: (e as Error).message, path }, 'could not rename the log aside; it stays where it is');
        kept.push(path);
      }
    }
    this.#keptLogs = kept;
    if (kept.length > 0) this.#log.warn({ logs: kept }, "the destination QEMU's logs are kept");
  }

  /** Where the last rollback left QEMU's logs (QEMU's stderr, the guest console), to name in its message. */
  get keptLogs(): readonly string[] {
    return this.#keptLogs;
  }

  /**
   * Whether the guest still needs a pivot: the QEMU this agent started is running the guest on the export. An
   * attached QEMU (--qmp) is the operator's to move (README); a guest that shut down needs no disk.
   */
  get guestOnExport(): boolean {
    // The process, not the QMP connection, says whether QEMU is there: a dropped QMP connection is reopened to move it.
    return this.#started && this.#proc !== null && this.#proc.alive && !this.#pivoted && !this.#notOnExport;
  }

  #pivoted = false;
  /** QEMU showed no disk on the export: nothing to move, and D may stop at SIGTERM as for any other client. */
  #notOnExport = false;

  /** Move the guest's disk from the export to the completed local image (qemu-pivot.ts); on failure it stays on the export. */
  async pivot(imagePath: string): Promise<PivotResult> {
    this.#o.events.emit('hypervisor', { side: 'dest', state: 'pivoting', image: imagePath });
    try {
      if (!this.#qmp || this.#qmp.closed) this.#qmp = await QmpClient.connect(this.#o.qmpPath, { timeoutMs: QMP_CONNECT_TIMEOUT_MS });
      const done = await pivotToLocal(this.#qmp, { exportUri: this.#exportUri, imagePath, log: this.#log });
      this.#pivoted = true;
      this.#o.events.emit('hypervisor', { side: 'dest', state: 'pivoted', device: done.device, image: done.file, durationMs: done.durationMs });
      return done;
    } catch (e) {
      if (e instanceof NotOnExportError) this.#notOnExport = true;
      const err = await this.#explain(e);
      this.#o.events.emit('hypervisor', { side: 'dest', state: 'pivot-failed', error: (err as Error).message });
      throw err;
    }
  }

  /** Detach at exit: the guest keeps running; QEMU keeps its own QMP socket. */
  close(): void {
    this.#qmp?.close();
  }
}

function lstatIdentity(path: string): FileIdentity | null {
  const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  return st?.isFile() ? { dev: st.dev.toString(), ino: st.ino.toString() } : null;
}

/** migrate-incoming has made QEMU listen: connect (it may take a moment to appear). */
async function openIncoming(path: string): Promise<Socket> {
  const deadline = Date.now() + INCOMING_SOCKET_WAIT_MS;
  for (;;) {
    try {
      return await connectUnixSocket(path);
    } catch (e) {
      if (Date.now() > deadline) throw new HypervisorError('PC_ERR_HYPERVISOR', `cannot reach the destination QEMU's incoming socket: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, INCOMING_SOCKET_POLL_MS));
    }
  }
}
