// The simulated guest's device state (its "CPU registers"): everything besides RAM that a restored guest
// needs to continue exactly where the paused one stopped. Plain JSON; the write map is packed to stay small.
import { ProtocolError } from '../common/errors.js';
import type { PrngState } from './prng.js';
import type { SimGuestSpec } from './types.js';

export const DEVICE_STATE_KIND = 'sim-guest';
export const DEVICE_STATE_VERSION = 1;

export interface SimGuestDeviceState {
  kind: typeof DEVICE_STATE_KIND;
  version: typeof DEVICE_STATE_VERSION;
  /** Echo of the spec and disk geometry, so a state is never loaded into a different guest. */
  seed: number;
  ramBytes: number;
  diskSize: number;
  ramPrng: PrngState;
  diskPrng: PrngState;
  /** Pages dirtied and disk operations started over the guest's life. */
  ramSeq: number;
  opSeq: number;
  /** Rate carry-overs: the fraction of a page owed, and disk operations owed (whole ones not yet started + fraction). */
  ramCarry: number;
  diskBudget: number;
  /** Failed writes still to redo: [first unit, unit count]. */
  retries: Array<[number, number]>;
  writeMapCount: number;
  /** WriteMap.encode() of unit -> generation. */
  writeMap: string;
}

function bad(detail: string): never {
  throw new ProtocolError('PC_ERR_MALFORMED', `sim guest device state: ${detail}`);
}

const isU32x4 = (v: unknown): v is PrngState =>
  Array.isArray(v) && v.length === 4 && v.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isFinite0 = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Validate a device state received from the peer against the guest it is meant for. */
export function parseDeviceState(raw: Record<string, unknown>, spec: SimGuestSpec, diskSize: number): SimGuestDeviceState {
  const s = raw as Partial<SimGuestDeviceState>;
  if (s.kind !== DEVICE_STATE_KIND) bad(`kind ${String(s.kind)}`);
  if (s.version !== DEVICE_STATE_VERSION) bad(`version ${String(s.version)}`);
  if (s.seed !== spec.seed || s.ramBytes !== spec.ramBytes) bad('belongs to a different guest spec');
  if (s.diskSize !== diskSize) bad(`disk size ${String(s.diskSize)} but this disk is ${diskSize}`);
  if (!isU32x4(s.ramPrng) || !isU32x4(s.diskPrng)) bad('bad PRNG state');
  if (!isCount(s.ramSeq) || !isCount(s.opSeq) || !isCount(s.writeMapCount)) bad('bad counters');
  if (!isFinite0(s.ramCarry) || !isFinite0(s.diskBudget)) bad('bad rate carry');
  if (!Array.isArray(s.retries) || !s.retries.every((r) => Array.isArray(r) && r.length === 2 && isCount(r[0]) && isCount(r[1]))) {
    bad('bad retries');
  }
  if (typeof s.writeMap !== 'string') bad('write map missing');
  return s as SimGuestDeviceState;
}
