// QEMU's migration vocabulary shared by both sides: the capabilities we turn on and the query-migrate shape.
import type { QmpClient } from './qmp-client.js';

/** `query-migrate`'s reply, the fields we read (QEMU 7.2, qapi/migration.json). */
export interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
  ram?: { transferred: number; 'dirty-sync-count'?: number; 'postcopy-requests'?: number; remaining?: number };
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
