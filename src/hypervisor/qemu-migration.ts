// QEMU's migration vocabulary shared by both sides: the capabilities we turn on and the query-migrate shape.
//
// The post-copy RAM rule (QEMU 7.2, TCG, measured): with `postcopy-ram` the source switches at once
// (`migrate-start-postcopy` right after `migrate`), the destination QEMU stays paused (`stop` while incoming)
// while the rest of RAM arrives, and both sides report ready only at `completed`; Finish then runs `cont`.
// So D still answers before any resume, and the stream is over before Finish: the agents stop carrying it
// there, and a link lost after Finish cannot strand a guest waiting for RAM pages. The guest's pause then
// covers the RAM sent after the switch. Measured alternatives: switching after a first precopy pass left the
// destination guest corrupted (kernel GPF) or hung in 3 of 3 runs, with or without a paused destination;
// running the guest on D at `postcopy-active` would need the agents to carry the stream after Finish, hold
// Confirm until it ends, and re-attach it after a reconnect (QEMU's postcopy recovery); they do not.
import type { QmpClient } from './qmp-client.js';

/** `query-migrate`'s reply, the fields we read (QEMU 7.2, qapi/migration.json). */
export interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining?: number;
    'dirty-sync-count'?: number;
    'postcopy-requests'?: number;
    /** Bytes sent before the stop, during the stop, after the switch to post-copy (QEMU 7.1+). */
    'precopy-bytes'?: number;
    'downtime-bytes'?: number;
    'postcopy-bytes'?: number;
  };
}

/** Statuses after which QEMU's migration is over without handing the guest over. */
export const MIGRATION_FAILED = new Set(['failed', 'cancelled', 'cancelling']);

/**
 * `return-path`: the destination answers on the same stream, so the source reports `completed` only after the
 * destination has loaded everything (and `failed` if it could not). `postcopy-ram` must match on both sides.
 * `events`: MIGRATION status events, for the logs.
 */
export function migrationCapabilities(postcopyRam: boolean): Array<{ capability: string; state: boolean }> {
  return [
    { capability: 'return-path', state: true },
    { capability: 'postcopy-ram', state: postcopyRam },
    { capability: 'events', state: true },
  ];
}

export function queryMigrate(qmp: QmpClient): Promise<MigrateInfo> {
  return qmp.execute<MigrateInfo>('query-migrate');
}

/** Attaching to the source QEMU's QMP socket: it is already running, so its socket is there or never will be. */
export const QMP_ATTACH_TIMEOUT_MS = 1000;
/** QEMU connects to our migration socket right after `migrate`; 10 s means it is wedged. */
export const QEMU_MIGRATE_CONNECT_TIMEOUT_MS = 10_000;
/** `query-migrate` polling while QEMU migrates: 20 ms notices the hand-over well within a downtime budget. */
export const MIGRATE_POLL_MS = 20;
/** After `migrate_cancel` QEMU settles within a few polls; give it 10 s before resuming anyway. */
export const MIGRATE_CANCEL_WAIT_MS = 10_000;
/** Polling while a cancel settles: nothing is waiting on it but the rollback. */
export const MIGRATE_CANCEL_POLL_MS = 50;
/** `quit` closes QMP at once; 10 s means QEMU hangs (we log it and go on). */
export const QEMU_QUIT_TIMEOUT_MS = 10_000;
