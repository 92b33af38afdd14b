// Constants of D's path model (path-estimator.ts): the gains and filter lengths of BBR (Cardwell et al., "BBR:
// Congestion-Based Congestion Control", ACM Queue 2016; draft-cardwell-iccrg-bbr-congestion-control), each with why,
// and the few of our own (headroom for a waiting guest, request sizing for pacing).
import { DEFAULT_MAX_STREAM_WINDOW_BYTES } from './constants.js';
import { DEMAND_WINDOW_BYTES } from './store-constants.js';

export interface PathLimits {
  /** Bytes in flight at least, whatever the estimates (a loopback or LAN link needs more than its tiny BDP). */
  minWindowBytes: number;
  /** Bytes in flight at most (--bulk-window). */
  maxWindowBytes: number;
  /** The window while the guest waits on demand reads and the estimates say little (a short path). */
  headroomFloorBytes: number;
}

/**
 * The window's bounds. At least 1 MiB in flight: a loopback or LAN path's bandwidth-delay product is a few KiB,
 * while S and D need about that much queued to stay busy (BENCHMARKS.md); 512 KiB while the guest waits on such
 * a path (a demand reply queues behind little bulk data).
 */
export const DEFAULT_PATH_LIMITS: PathLimits = {
  minWindowBytes: 1024 * 1024,
  maxWindowBytes: DEFAULT_MAX_STREAM_WINDOW_BYTES,
  headroomFloorBytes: DEMAND_WINDOW_BYTES,
};

/** The bounds with the operator's --bulk-window as the most in flight (the floors never above it). */
export function pathLimitsUpTo(maxWindowBytes: number = DEFAULT_MAX_STREAM_WINDOW_BYTES): PathLimits {
  return {
    minWindowBytes: Math.min(DEFAULT_PATH_LIMITS.minWindowBytes, maxWindowBytes),
    maxWindowBytes,
    headroomFloorBytes: Math.min(DEFAULT_PATH_LIMITS.headroomFloorBytes, maxWindowBytes),
  };
}

/** Startup: the smallest gain that still doubles the delivery rate each round trip (2/ln 2). */
export const STARTUP_GAIN = 2 / Math.LN2;
/**
 * Startup's window: two bandwidth-delay products (BBRv3's startup cwnd gain) still let the rate double each round
 * trip, and the round in which the rate reaches the bottleneck queues at most one BDP before the queue shows …
 */
export const STARTUP_WINDOW_GAIN = 2;
/** Startup ends once the rate estimate grew by less than this factor … */
export const STARTUP_GROWTH = 1.25;
/** … for this many round trips in a row: the pipe is full (not while the guest waits: only a queue ends it then) … */
export const STARTUP_FULL_ROUNDS = 3;
/** … or once the latest this many RTT samples all show a queue (HyStart++'s N_RTT_SAMPLE, RFC 9406) … */
export const STARTUP_QUEUE_SAMPLES = 8;
/** … from this round on (the opening burst queues for a moment on any path), after a round without growth. */
export const STARTUP_MIN_ROUNDS = 2;
/**
 * While the guest waits on demand reads, startup paces and grows its window by a quarter a round trip: the climb is
 * slower, smooth instead of bursty, and the queue it can build before it shows a quarter of a BDP (a guest reading
 * over 80 ms waits 20 ms more at most, not 80). Measured against x1.5: the same goodput on this machine, a longer tail.
 */
export const HEADROOM_STARTUP_GAIN = 1.25;
/** … and its rate counts as still growing above this factor a round trip (BBR's 1.25 assumes doubling). */
export const HEADROOM_STARTUP_GROWTH = 1.05;
/** Drain lasts at most this many round trips (startup queued at most about one BDP too many). */
export const DRAIN_MAX_ROUNDS = 3;
/**
 * Probe-bw cycles through these pacing gains, one min-RTT each: probe for more, drain what that queued, cruise.
 * The probe itself lasts as long as the rate follows it, its gain compounding each round trip (the link had room).
 */
export const PROBE_BW_GAINS: readonly number[] = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
/** A probe compounds while each round trip's rate estimate grew by this factor at least. */
export const PROBE_UP_GROWTH = 1.1;
/** … and ends after this many round trips without (rate samples lag a round trip behind what was sent). */
export const PROBE_UP_STALL_ROUNDS = 2;
/** The cruise phase the cycle starts in (not the drain right after a probe that never happened). */
export const PROBE_BW_FIRST_PHASE = 2;
/** In probe-bw, bytes in flight at most this many bandwidth-delay products (room for delayed and bunched replies). */
export const PROBE_BW_WINDOW_GAIN = 2;

/**
 * While the guest waits on demand reads, bulk is paced at this fraction of the bottleneck's rate, so the queue
 * ahead of a demand reply drains instead of standing; 5 % of the link is the price of a guest that does not wait.
 */
export const HEADROOM_PACING_GAIN = 0.95;
/** … probing above the estimate by this much instead of 1.25 (a tenth of a round trip of queue per probe round) … */
export const HEADROOM_PROBE_GAIN = 1.1;
/** … and no more than this many bandwidth-delay products in flight. */
export const HEADROOM_WINDOW_GAIN = 1.5;

/** A round trip's best RTT this much above the min RTT means a standing queue: an eighth of the min RTT … */
export const QUEUE_ALLOWANCE_FRACTION = 1 / 8;
/**
 * … but at least 4 ms: on two shared vCPUs a busy S or D delays every reply of a round by a few ms with no queue at
 * the link (with 2 ms the stream drained itself to 65–75 % of the link, TLS worst; BENCHMARKS.md, issue 15) …
 */
export const QUEUE_ALLOWANCE_MIN_MS = 4;
/** … and at most 16 ms (HyStart's upper bound, RFC 9406). */
export const QUEUE_ALLOWANCE_MAX_MS = 16;
/**
 * A round whose replies brought less than this share of what it asked for fell behind: with a standing queue, that
 * is the path's limit, and the estimate comes down to what was delivered. A slow disk under S delays replies just
 * as a queue does, but all that was asked still arrives: lowering the estimate then would only ratchet it to zero.
 */
export const FELL_BEHIND_FRACTION = 0.9;
/** While a standing queue is seen in probe-bw, bulk is paced this far below the estimate until it drains. */
export const QUEUE_DRAIN_GAIN = 0.9;

/** The rate estimate is the highest delivery rate over this many round trips … */
export const BW_FILTER_ROUNDS = 10;
/** … and at least this long: on loopback a round trip is a fraction of a millisecond, and one GC pause is not the link. */
export const BW_FILTER_MIN_MS = 500;
/** The min RTT is the lowest seen over this long; older than that, probe-rtt measures it again. */
export const MIN_RTT_WINDOW_MS = 10_000;
/** Probe-rtt holds the window down this long (and at least one round trip) to see the path without our queue. */
export const PROBE_RTT_MS = 200;
/** Bytes in flight during probe-rtt: four 64 KiB blocks, enough to keep measuring, too few to queue. */
export const PROBE_RTT_WINDOW_BYTES = 256 * 1024;

/** A paced bulk request carries about this long of the pacing rate: small bursts at the bottleneck. */
export const PACED_REQUEST_MS = 2;
/** Pacing lets this long of the rate go at once (timers fire late; one wake-up sends what is due). */
export const PACING_BURST_MS = 4;
/** The smoothed RTT follows each sample by this fraction (RFC 6298's alpha). */
export const SRTT_ALPHA = 1 / 8;
