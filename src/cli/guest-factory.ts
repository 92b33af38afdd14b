// Builds the guest named in a guest definition: the simulated guest of DESIGN.md §6 (the only kind built in).
import { UsageError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { GuestDefinition } from '../protocol/messages.js';
import { SimGuest } from '../guest/sim-guest.js';
import type { SimGuestSpec } from '../guest/types.js';

export function simGuestDefinition(spec: SimGuestSpec): GuestDefinition {
  return {
    persistent: { ...spec },
    transient: { startedAt: new Date().toISOString(), pid: process.pid },
  };
}

export function restoreGuest(def: GuestDefinition, ram: Buffer, deviceState: Record<string, unknown>, diskSize: number, log: Logger): SimGuest {
  const spec = def.persistent as unknown as SimGuestSpec;
  if (spec.kind !== 'sim') throw new UsageError('PC_ERR_USAGE', `guest kind '${String(spec.kind)}' is not supported by this destination`);
  return SimGuest.fromMigration(spec, ram, deviceState, { diskSize, log });
}
