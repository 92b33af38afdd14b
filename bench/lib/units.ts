// Units the benchmarks measure and report in, written once so every figure converts the same way.

export const KiB = 1024;
export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
/** performance.now() and process timings are in milliseconds; reports say seconds. */
export const MS_PER_S = 1000;

/** Milliseconds as seconds. */
export const sec = (ms: number): number => ms / MS_PER_S;
/** Bytes as MiB. */
export const mib = (bytes: number): number => bytes / MiB;
/** KiB (as /proc and getrusage report RSS) as MiB. */
export const kibToMiB = (kib: number): number => kib / KiB;
