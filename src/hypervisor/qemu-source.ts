// S's side of a QEMU guest: drives the running source QEMU over QMP. Its `migrate` goes to a Unix socket of
// this agent, whose bytes travel both ways over the migration link; rollback is `cont`, shutdown is `quit`.
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { isPostcopyError, toPostcopyError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { GuestStreamChannel, SourceGuestMigrator } from '../guest/migrator.js';
import type { GuestDefinition } from '../protocol/messages.js';
import { HypervisorError, hypervisorWait } from './errors.js';
import { QmpClient, type QmpEvent } from './qmp-client.js';
import { relay, type Relay } from './stream-relay.js';
import {
  MIGRATE_CANCEL_POLL_MS, MIGRATE_CANCEL_WAIT_MS, MIGRATE_POLL_MS, MIGRATION_FAILED, QEMU_MIGRATE_CONNECT_TIMEOUT_MS, QEMU_QUIT_TIMEOUT_MS, QMP_ATTACH_TIMEOUT_MS,
  migrationCapabilities, queryMigrate, type MigrateInfo,
} from './qemu-migration.js';

export interface QemuSourceOptions {
  qmpPath: string;
  /** QEMU's own post-copy of RAM (`postcopy-ram`): RAM still missing at the switch is sent after it. */
  postcopyRam: boolean;
  /** Where the local migration socket is made (S's state dir or a temp dir). */
  socketDir: string;
  /** The socket dir is ours (a temp dir): remove it at close. */
  removeSocketDir?: boolean;
  /** QEMU's `downtime-limit` (ms) for its final pass. */
  downtimeLimitMs?: number;
  log: Logger;
  events: EventSink;
}

/** What QEMU and the relay measured, for the summary. */
export interface QemuSourceStats {
  /** QEMU's own figures from the final query-migrate. */
  qemu: {
    status: string;
    totalTimeMs?: number;
    downtimeMs?: number;
    ramTransferredBytes?: number;
    /** Post-copy RAM: whether QEMU switched, the bytes sent after the switch, the destination's page requests. */
    postcopyStarted: boolean;
    postcopyBytes?: number;
    postcopyRequests?: number;
  } | null;
  relay: { bytesToDest: number; bytesFromDest: number } | null;
}

export class QemuSourceMigrator implements SourceGuestMigrator {
  readonly definition: GuestDefinition;
  readonly #qmp: QmpClient;
  readonly #o: QemuSourceOptions;
  readonly #log: Logger;
  #server: Server | null = null;
  #relay: Relay | null = null;
  /** The guest ran when the migration began: only then may a rollback restart it. */
  #wasRunning = false;
  #postcopyStarted = false;
  readonly stats: QemuSourceStats = { qemu: null, relay: null };

  private constructor(qmp: QmpClient, definition: GuestDefinition, opts: QemuSourceOptions) {
    this.#qmp = qmp;
    this.definition = definition;
    this.#o = opts;
    this.#log = opts.log.child({ hypervisor: 'qemu', side: 'source' });
    qmp.on('close', (err) => this.#log.warn({ err: err?.message }, 'QMP connection to the source QEMU closed'));
  }

  /** Attach to the running source QEMU; refuses one that is already migrating or not running a guest. */
  static async open(opts: QemuSourceOptions): Promise<QemuSourceMigrator> {
    // The source QEMU is already running: no long wait for its socket to appear.
    const qmp = await QmpClient.connect(opts.qmpPath, { timeoutMs: QMP_ATTACH_TIMEOUT_MS });
    try {
      const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
      const version = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version');
      const name = await qmp.execute<{ name?: string }>('query-name');
      const mig = await queryMigrate(qmp);
      if (mig.status && !['none', 'completed', 'failed', 'cancelled'].includes(mig.status)) {
        throw new HypervisorError('PC_ERR_HYPERVISOR', `the source QEMU is already migrating (status ${mig.status})`);
      }
      if (status.status !== 'running' && status.status !== 'paused') {
        throw new HypervisorError('PC_ERR_HYPERVISOR', `the source QEMU's guest is ${status.status}, not running or paused`);
      }
      const v = version.qemu;
      const definition: GuestDefinition = {
        persistent: { kind: 'qemu', name: name.name ?? null, postcopyRam: opts.postcopyRam },
        transient: { status: status.status, qemuVersion: `${v.major}.${v.minor}.${v.micro}` },
      };
      return new QemuSourceMigrator(qmp, definition, opts);
    } catch (e) {
      qmp.close();
      throw e;
    }
  }

  async transfer(channel: GuestStreamChannel): Promise<{ pausedAt: number }> {
    const qmp = this.#qmp;
    const status = await qmp.execute<{ status: string }>('query-status');
    this.#wasRunning = status.status === 'running';
    const path = join(this.#o.socketDir, `qemu-migrate-${process.pid}.sock`);
    rmSync(path, { force: true });
    const server = createServer();
    this.#server = server;
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    // The guest's pause: QEMU stops it for the final pass (precopy) or at the switch to post-copy.
    let pausedAt: number | null = null;
    const onStop = (e: QmpEvent) => {
      if (e.event === 'STOP' && pausedAt === null) pausedAt = e.at;
    };
    qmp.on('event', onStop);
    try {
      await qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(this.#o.postcopyRam) });
      if (this.#o.downtimeLimitMs !== undefined) await qmp.execute('migrate-set-parameters', { 'downtime-limit': this.#o.downtimeLimitMs });
      await qmp.execute('migrate', { uri: `unix:${path}` });
      // Switch at once (see qemu-migration.ts: a switch after a precopy pass broke the guest under TCG in 7.2).
      if (this.#o.postcopyRam) await qmp.execute('migrate-start-postcopy');
      this.#log.info({ socket: path, postcopyRam: this.#o.postcopyRam }, 'source QEMU migrating through this agent');
      const socket = await hypervisorWait(accepted, QEMU_MIGRATE_CONNECT_TIMEOUT_MS, 'the source QEMU did not connect to the migration socket');
      server.close();
      this.#relay = relay(socket, channel);
      const info = await this.#awaitSwitch(this.#relay);
      this.#recordStats(info);
      if (pausedAt === null) pausedAt = Date.now();
      this.#log.info({ ...this.stats.qemu }, 'source QEMU has handed over its guest');
      return { pausedAt };
    } catch (e) {
      this.#relay?.destroy(e instanceof Error ? e : undefined);
      throw toPostcopyError(e, (d, o) => new HypervisorError('PC_ERR_HYPERVISOR', `source QEMU migration: ${d}`, o));
    } finally {
      qmp.off('event', onStop);
      server.close();
      rmSync(path, { force: true });
    }
  }

  /**
   * Until QEMU has handed the guest over: `completed`, i.e. the destination has loaded everything (the return
   * path said so) and holds the guest paused.
   */
  async #awaitSwitch(r: Relay): Promise<MigrateInfo> {
    let relayError: Error | null = null;
    r.done.catch((e: Error) => (relayError = e));
    for (;;) {
      // The link's own error (the destination aborted, the link closed) says best what happened.
      if (relayError) throw toPostcopyError(relayError, (d, o) => new HypervisorError('PC_ERR_HYPERVISOR', `migration stream broken: ${d}`, o));
      const info = await queryMigrate(this.#qmp);
      if (info.status === 'completed') return info;
      if (info.status === 'postcopy-active' && !this.#postcopyStarted) {
        this.#postcopyStarted = true;
        this.#log.info({ transferred: info.ram?.transferred }, 'source QEMU switched to post-copy RAM');
      }
      if (MIGRATION_FAILED.has(info.status ?? '')) {
        // QEMU failed because we cut its socket when the link failed: the link's reason is the real one.
        if (relayError && isPostcopyError(relayError)) throw relayError;
        throw new HypervisorError('PC_ERR_HYPERVISOR', `source QEMU migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
      }
      await new Promise((res) => setTimeout(res, MIGRATE_POLL_MS));
    }
  }

  #recordStats(info: MigrateInfo): void {
    this.stats.qemu = {
      status: info.status ?? 'unknown',
      postcopyStarted: this.#postcopyStarted,
      ...(info.ram?.['postcopy-bytes'] !== undefined ? { postcopyBytes: info.ram['postcopy-bytes'] } : {}),
      ...(info['total-time'] !== undefined ? { totalTimeMs: info['total-time'] } : {}),
      ...(info.downtime !== undefined ? { downtimeMs: info.downtime } : {}),
      ...(info.ram ? { ramTransferredBytes: info.ram.transferred } : {}),
      ...(info.ram?.['postcopy-requests'] !== undefined ? { postcopyRequests: info.ram['postcopy-requests'] } : {}),
    };
    if (this.#relay) this.stats.relay = { bytesToDest: this.#relay.stats.bytesOut, bytesFromDest: this.#relay.stats.bytesIn };
    this.#o.events.emit('hypervisor', { side: 'source', ...this.stats });
  }

  /** Rollback before Finish: stop QEMU's migration if it still runs, then run the guest here again. */
  async resume(): Promise<void> {
    this.#relay?.destroy(new Error('migration rolled back'));
    let info = await queryMigrate(this.#qmp);
    if (info.status && !['completed', 'failed', 'cancelled', 'none'].includes(info.status)) {
      await this.#qmp.execute('migrate_cancel').catch((e: Error) => this.#log.warn({ err: e.message }, 'migrate_cancel refused'));
      const deadline = Date.now() + MIGRATE_CANCEL_WAIT_MS;
      while (info.status && !['completed', 'failed', 'cancelled', 'none'].includes(info.status) && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, MIGRATE_CANCEL_POLL_MS));
        info = await queryMigrate(this.#qmp);
      }
    }
    const status = await this.#qmp.execute<{ status: string }>('query-status');
    if (status.status === 'running' || !this.#wasRunning) {
      this.#log.info({ status: status.status }, 'source QEMU guest left as it is');
      return;
    }
    // After a completed migration the images are inactive; `cont` reactivates them (QEMU does it).
    await this.#qmp.execute('cont');
    this.#log.warn({ was: status.status, migration: info.status }, 'source QEMU guest resumed');
  }

  /** After Confirm: the guest lives on D; quit the source QEMU. */
  async shutdown(): Promise<void> {
    this.#relay?.destroy(new Error('source shut down'));
    const closed = new Promise<void>((res) => (this.#qmp.closed ? res() : this.#qmp.once('close', () => res())));
    await this.#qmp.execute('quit').catch(() => {
      // QEMU may close the socket before its reply: the close below is what counts.
    });
    await hypervisorWait(closed, QEMU_QUIT_TIMEOUT_MS, 'the source QEMU did not quit').catch((e: Error) => this.#log.warn({ err: e.message }, 'quit'));
    this.#qmp.close();
    this.#log.info('source QEMU quit');
    this.#o.events.emit('hypervisor', { side: 'source', state: 'quit' });
  }

  close(): void {
    this.#server?.close();
    this.#qmp.close();
    if (this.#o.removeSocketDir) rmSync(this.#o.socketDir, { recursive: true, force: true });
  }
}
