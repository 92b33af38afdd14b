// Human sizes on the command line: 512, 64K, 256M, 1G, 1.5G (binary units).
import { UsageError } from '../common/errors.js';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new UsageError('PC_ERR_USAGE', `${what}: '${text}' is not a size (e.g. 64K, 256M, 1G)`);
  const bytes = Math.round(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new UsageError('PC_ERR_USAGE', `${what}: '${text}' is out of range`);
  return bytes;
}

/** A rate in bytes per second: a size per second (50M, 50M/s, 1.5GiB/s = binary units). */
export function parseRate(text: string, what: string): number {
  return parseSize(text.trim().replace(/\/s$/i, ''), what);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function parseIntArg(text: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError('PC_ERR_USAGE', `${what}: '${text}' must be an integer in ${min}..${max}`);
  return n;
}

export function parseFloatArg(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError('PC_ERR_USAGE', `${what}: '${text}' must be a number in ${min}..${max}`);
  return n;
}
