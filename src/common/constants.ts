// Numbers of the shared helpers in src/common, each with why it is what it is.

/** isAllZero compares this much at a time against one zero buffer: memcmp speed, and a small buffer kept for it. */
export const ZERO_COMPARE_GRAIN = 64 * 1024;

/** Latency samples kept exactly before the reservoir takes over: 8 MiB of float64, hours of a demo workload. */
export const LATENCY_SAMPLE_CAP = 1 << 20;
/** Samples the recorder starts with room for (it doubles up to its cap): a short run allocates little. */
export const LATENCY_INITIAL_SAMPLES = 1024;
