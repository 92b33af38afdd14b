// What D knows of the path from S: the round trip with no queue in it (min RTT), the bottleneck's rate (the highest
// delivery rate seen), and from the two the bulk window and pacing rate that keep the link full without a standing
// queue ahead of demand replies. BBR's model applied to a pull protocol: D's requests are the sends, S's replies
// the acknowledgements that carry data. Pure: the caller passes the time (ms), nothing here sets a timer.
import {
  BW_FILTER_MIN_MS, BW_FILTER_ROUNDS, DRAIN_MAX_ROUNDS, FELL_BEHIND_FRACTION, HEADROOM_PACING_GAIN, HEADROOM_PROBE_GAIN,
  HEADROOM_STARTUP_GAIN, HEADROOM_STARTUP_GROWTH, HEADROOM_WINDOW_GAIN, MIN_RTT_WINDOW_MS, PACING_BURST_MS,
  PROBE_BW_FIRST_PHASE, PROBE_BW_GAINS, PROBE_BW_WINDOW_GAIN, PROBE_RTT_MS, PROBE_RTT_WINDOW_BYTES, PROBE_UP_GROWTH,
  PROBE_UP_STALL_ROUNDS, QUEUE_ALLOWANCE_FRACTION, QUEUE_ALLOWANCE_MAX_MS, QUEUE_ALLOWANCE_MIN_MS, QUEUE_DRAIN_GAIN,
  SRTT_ALPHA, STARTUP_FULL_ROUNDS, STARTUP_GAIN, STARTUP_GROWTH, STARTUP_MIN_ROUNDS, STARTUP_QUEUE_SAMPLES,
  STARTUP_WINDOW_GAIN,
  type PathLimits,
} from './path-constants.js';
import type { BulkRateLimit } from '../common/token-bucket.js';

/** startup: double the rate each round trip until it stops growing; drain: empty what startup queued;
 * probe-bw: cruise at the estimate, probing above it now and then; probe-rtt: hold the window down to see the min RTT. */
export type PathPhase = 'startup' | 'drain' | 'probe-bw' | 'probe-rtt';

/** What a request carries from its send to its completion: the delivery-rate sample is taken over that span. */
export interface SendStamp {
  /** Reply bytes delivered before the send, and when the last of them arrived. */
  readonly delivered: number;
  readonly deliveredAt: number;
  /** Sent while D did not use the path fully: its sample may raise the rate estimate, never lower it. */
  readonly appLimited: boolean;
}

/** The path as events and the summary report it. */
export interface PathReport {
  phase: PathPhase;
  minRttMs: number | null;
  rttMs: number | null;
  bottleneckBytesPerSec: number | null;
  windowBytes: number;
  /** null: not paced (no estimate yet). */
  pacingBytesPerSec: number | null;
  headroom: boolean;
  rounds: number;
}

interface RateSample {
  round: number;
  at: number;
  bytesPerMs: number;
}

export class PathEstimator {
  readonly #limits: PathLimits;
  readonly #inflight: () => number;
  #phase: PathPhase = 'startup';
  #phaseAt: number;
  #phaseRound = 0;
  #minRtt = Infinity;
  #minRttAt = -Infinity;
  #srtt: number | null = null;
  /** The lowest RTT sample of the round trip under way and of the last whole one: above the min RTT, a queue stands. */
  #roundMinRtt = Infinity;
  #lastRoundMinRtt = Infinity;
  /** The latest RTT samples (startup's exit looks at them). */
  readonly #recentRtts: number[] = [];
  #recentCount = 0;
  /** Bytes delivered when the round under way began, and when. */
  #roundStartDelivered = 0;
  #roundStartAt = 0;
  /** Bytes answered as zero, and bytes asked for (all requests), in the round under way. */
  #roundZeroBytes = 0;
  #roundAskedBytes = 0;
  /** Rate samples still inside the filter's span, each larger than every later one (a running max). */
  #samples: RateSample[] = [];
  #delivered = 0;
  #deliveredAt: number;
  #round = 0;
  /** A round trip ends when a request sent after this many bytes were delivered completes. */
  #roundEndsAfter = 0;
  #fullBw = 0;
  #fullBwRounds = 0;
  #pipeFull = false;
  #cycle = PROBE_BW_FIRST_PHASE;
  /** How far the probe under way has compounded its gain, and the rate it started its last round from. */
  #probeUp = 1;
  #probeFromRate = 0;
  #probeStalls = 0;
  #cycleAt = 0;
  #probeRttRound = -1;
  #appLimitedUntil = 0;
  #headroom = false;
  /** Pacing: bytes that may be asked for now, refilled at the pacing rate (null: not paced). */
  #tokens = 0;
  #tokensAt: number | null = null;
  /** The burst the streamer last allowed: under the operator's cap a send refills up to the same (a smaller one, at a
   * low cap, would drop tokens the cap grants: 4 ms of 5 MiB/s is less than a block). */
  #burstBytes = 0;
  /** Bytes startup has added to the window's floor so far. */
  #startupGrowth = 0;

  /** The operator's cap on bulk bytes (--max-bandwidth): pacing never goes above it, read afresh at each use. */
  readonly #bulkRate: BulkRateLimit | null;

  constructor(limits: PathLimits, inflight: () => number, now: number, bulkRate: BulkRateLimit | null = null) {
    this.#bulkRate = bulkRate;
    this.#limits = limits;
    this.#inflight = inflight;
    this.#phaseAt = now;
    this.#deliveredAt = now;
  }

  get phase(): PathPhase {
    return this.#phase;
  }
  /** Bytes per ms; 0 until the first sample. */
  get bottleneckRate(): number {
    return this.#samples[0]?.bytesPerMs ?? 0;
  }
  get minRttMs(): number | null {
    return Number.isFinite(this.#minRtt) ? this.#minRtt : null;
  }
  get srttMs(): number | null {
    return this.#srtt;
  }

  /** Bandwidth-delay product in bytes, or null while either is unknown. */
  get bdp(): number | null {
    const bw = this.bottleneckRate;
    return bw > 0 && Number.isFinite(this.#minRtt) ? bw * this.#minRtt : null;
  }

  /** The guest waits on demand reads: bulk leaves headroom (its samples then cannot lower the estimate). */
  setHeadroom(on: boolean): void {
    this.#headroom = on;
  }

  /**
   * A request of `bytes` goes out; `inflightBefore`: bytes of replies still owed before it (all classes). Every
   * request spends from the pacing allowance, a demand read too (it never waits for it): the bottleneck carries both.
   */
  onSend(now: number, inflightBefore: number, bytes: number): SendStamp {
    // With nothing owed, the last delivery is no reference: the sample's span starts now.
    if (inflightBefore === 0) this.#deliveredAt = now;
    this.#roundAskedBytes += bytes;
    if (this.#tokensAt !== null) {
      this.allowance(now, this.#capHolds(now) ? this.#burstBytes : 0);
      this.#tokens -= bytes;
    }
    // Held below the path by the cap, a sample says nothing of the path's limit: it may raise the estimate, never lower it.
    const appLimited = this.#appLimitedUntil > this.#delivered || this.#headroomActive() || this.#capHolds(now);
    return { delivered: this.#delivered, deliveredAt: this.#deliveredAt, appLimited };
  }

  /** A reply said `bytes` are zero: nothing crossed the link for them (the zero map had not told D yet). */
  onZeroReply(bytes: number): void {
    this.#roundZeroBytes += bytes;
    // Under the operator's cap, zeroes cost no wire bytes: what their request spent is given back (up to the burst,
    // at the next refill), so a hole S had not yet told D of is crossed at the link's pace, not the cap's.
    if (this.#tokensAt !== null && this.#capPerMs() !== null) this.#tokens += bytes;
  }

  /** Reply bytes arrived (data bytes: what crosses the bottleneck). */
  onDelivered(bytes: number, now: number): void {
    this.#delivered += bytes;
    this.#deliveredAt = now;
    // Startup's window grows with what arrives, as TCP's slow start does (doubling a round trip, x1.25 for a waiting
    // guest): rate samples lag a round or more behind, and a window sized from them alone would climb that slowly.
    // It grows only while below startup's gain times the BDP measured so far (BBR's rule): on a short path that
    // target is below the floor, and S would otherwise be asked for tens of MiB it holds in memory to serve.
    if (this.#phase === 'startup' && this.#belowStartupTarget()) this.#startupGrowth += bytes * (this.#headroom ? HEADROOM_STARTUP_GAIN - 1 : 1);
  }

  /** A round-trip time: a request's first reply part (minus its own transfer time), or a PING's PONG. */
  onRtt(ms: number, now: number): void {
    if (!(ms >= 0)) return;
    const expired = now - this.#minRttAt > MIN_RTT_WINDOW_MS;
    if (ms <= this.#minRtt || expired) {
      this.#minRtt = ms;
      this.#minRttAt = now;
    }
    this.#srtt = this.#srtt === null ? ms : this.#srtt + SRTT_ALPHA * (ms - this.#srtt);
    this.#roundMinRtt = Math.min(this.#roundMinRtt, ms);
    this.#recentRtts[this.#recentCount++ % STARTUP_QUEUE_SAMPLES] = ms;
    // Startup leaves as soon as the latest samples all show a queue (HyStart++ looks at a round's first samples;
    // the latest ones see a queue sooner): waiting for the round's end lets the window grow on into the queue.
    if (this.#recentCount < STARTUP_QUEUE_SAMPLES || !this.#queueAbove(Math.min(...this.#recentRtts))) return;
    // The opening burst queues for a moment whatever the path: startup heeds a queue from its second round on, and
    // only once the rate has stopped growing for a round (a busy host delays replies too, without a queue at the link).
    if (this.#phase === 'startup' && this.#round >= STARTUP_MIN_ROUNDS && this.#fullBwRounds >= 1) {
      this.#pipeFull = true;
      this.#enter('drain', now);
    } else if (this.#probing) this.#endProbe(now);
    if (expired && this.#phase !== 'probe-rtt' && this.#pipeFull) this.#enter('probe-rtt', now);
  }

  /** D had room in the window but nothing to ask for: samples until what is owed now arrives are app-limited. */
  markAppLimited(): void {
    this.#appLimitedUntil = this.#delivered + Math.max(1, this.#inflight());
  }

  /** A request's last reply part arrived: one delivery-rate sample, and maybe a round trip ended. */
  onDone(stamp: SendStamp, now: number): void {
    const roundStart = stamp.delivered >= this.#roundEndsAfter;
    let roundRate = 0;
    let mostlyZero = false;
    let fellBehind = false;
    if (roundStart) {
      this.#round++;
      this.#roundEndsAfter = this.#delivered;
      this.#lastRoundMinRtt = this.#roundMinRtt;
      this.#roundMinRtt = Infinity;
      if (now > this.#roundStartAt) roundRate = (this.#delivered - this.#roundStartDelivered) / (now - this.#roundStartAt);
      // A round that asked mostly for zeroes moved few bytes whatever the link: it says nothing of a plateau.
      mostlyZero = this.#roundZeroBytes > this.#delivered - this.#roundStartDelivered;
      // Less arrived than was asked for: the path fell behind (a queue of ours grew). When as much arrived as was
      // asked, a late reply is S's (a slow disk under it) or a busy host: no reason to lower the estimate.
      fellBehind = this.#delivered - this.#roundStartDelivered + this.#roundZeroBytes < this.#roundAskedBytes * FELL_BEHIND_FRACTION;
      this.#roundZeroBytes = 0;
      this.#roundAskedBytes = 0;
      this.#roundStartAt = now;
      this.#roundStartDelivered = this.#delivered;
    }
    const span = now - stamp.deliveredAt;
    // Spans shorter than the path's round trip are replies bunched up on the way: no rate can be read from them.
    if (span > 0 && span >= (Number.isFinite(this.#minRtt) ? this.#minRtt : 0)) {
      const rate = (this.#delivered - stamp.delivered) / span;
      if (!stamp.appLimited || rate >= this.bottleneckRate) this.#addSample({ round: this.#round, at: now, bytesPerMs: rate });
    }
    if (roundStart) {
      // A queue stood through the whole round: the link was busy all of it, so what it delivered is its rate, however
      // little D meant to send. An estimate above that (a lucky sample in the max filter) would keep the queue
      // standing: it goes.
      if (this.queueing && fellBehind && roundRate > 0 && roundRate < this.bottleneckRate) this.#samples = [{ round: this.#round, at: now, bytesPerMs: roundRate }];
      this.#onRound(stamp.appLimited || mostlyZero, now);
    }
    this.#advance(now);
  }

  /** Bytes in flight allowed now. */
  windowBytes(now: number): number {
    this.#advance(now);
    const { minWindowBytes, maxWindowBytes, headroomFloorBytes } = this.#limits;
    const bdp = this.bdp;
    // A waiting guest lowers the floor at once (on a short path the floor is the whole window); the gains only
    // once the pipe's size is known.
    const floor = this.#headroom ? headroomFloorBytes : minWindowBytes;
    let w: number;
    if (this.#phase === 'probe-rtt') w = PROBE_RTT_WINDOW_BYTES;
    else if (this.#phase === 'startup') w = this.#startupWindow(floor, bdp ?? 0);
    else if (bdp === null) w = floor;
    else if (this.#phase === 'drain') w = Math.max(floor, bdp * STARTUP_WINDOW_GAIN);
    else w = Math.max(floor, bdp * this.#probeUp * (this.#headroomActive() ? HEADROOM_WINDOW_GAIN : PROBE_BW_WINDOW_GAIN));
    return Math.max(1, Math.min(maxWindowBytes, Math.round(w)));
  }

  #belowStartupTarget(): boolean {
    const bdp = this.bdp;
    if (bdp === null) return true;
    const floor = this.#headroom ? this.#limits.headroomFloorBytes : this.#limits.minWindowBytes;
    return floor + this.#startupGrowth < bdp * STARTUP_GAIN;
  }

  /** Startup's window: the floor plus what startup has grown it by, or the estimates' own if that is larger. */
  #startupWindow(floor: number, bdp: number): number {
    return Math.max(floor + this.#startupGrowth, bdp * (this.#headroom ? HEADROOM_STARTUP_GAIN : STARTUP_WINDOW_GAIN));
  }

  /** Bulk bytes per ms to pace at, or null: not paced (nothing measured yet, no cap): the model's rate, at most the cap. */
  pacingRate(now: number): number | null {
    const model = this.#modelRate(now);
    const cap = this.#capPerMs();
    return cap === null ? model : model === null ? cap : Math.min(model, cap);
  }

  /** The cap, not the path, sets the pace now. */
  #capHolds(now: number): boolean {
    const cap = this.#capPerMs();
    if (cap === null) return false;
    const model = this.#modelRate(now);
    return model === null || cap < model;
  }

  #capPerMs(): number | null {
    const bps = this.#bulkRate?.bytesPerSecond ?? null;
    return bps === null ? null : bps / 1000;
  }

  #modelRate(now: number): number | null {
    this.#advance(now);
    const bw = this.bottleneckRate;
    if (this.#phase === 'startup') {
      // Above the estimate by startup's gain (gentler for a waiting guest), and at least the window once per min
      // RTT: sends spread over the round trip instead of going in a burst (BBR paces from cwnd/srtt before it has a rate).
      const floor = this.#headroom ? this.#limits.headroomFloorBytes : this.#limits.minWindowBytes;
      const fromWindow = Number.isFinite(this.#minRtt) && this.#minRtt > 0 ? this.#startupWindow(floor, this.bdp ?? 0) / this.#minRtt : 0;
      const rate = Math.max(bw * (this.#headroom ? HEADROOM_STARTUP_GAIN : STARTUP_GAIN), fromWindow);
      return rate > 0 ? rate : null;
    }
    if (bw <= 0) return null;
    if (this.#phase === 'drain') return bw / STARTUP_GAIN;
    if (this.#phase === 'probe-rtt') return bw;
    if (this.#probing) return bw * this.#probeUp * (this.#headroomActive() ? HEADROOM_PROBE_GAIN : PROBE_BW_GAINS[0]!);
    // A standing queue is drained before anything else.
    if (this.queueing) return bw * QUEUE_DRAIN_GAIN;
    const gain = PROBE_BW_GAINS[this.#cycle]!;
    // A waiting guest: below the estimate between probes.
    return bw * (this.#headroomActive() ? Math.min(gain, HEADROOM_PACING_GAIN) : gain);
  }

  /**
   * Bytes of bulk requests that may go now (Infinity: not paced). The allowance refills at the pacing rate up to a
   * few milliseconds of it (`burstBytes` at least), so a late timer sends what came due without a burst beyond that.
   */
  allowance(now: number, burstBytes: number): number {
    const rate = this.pacingRate(now);
    if (rate === null) {
      this.#tokensAt = null;
      return Infinity;
    }
    this.#burstBytes = burstBytes;
    const cap = Math.max(burstBytes, rate * PACING_BURST_MS);
    this.#tokens = this.#tokensAt === null ? cap : Math.min(cap, this.#tokens + rate * (now - this.#tokensAt));
    this.#tokensAt = now;
    return this.#tokens;
  }

  report(now: number): PathReport {
    const pacing = this.pacingRate(now);
    return {
      phase: this.#phase,
      minRttMs: this.minRttMs,
      rttMs: this.#srtt,
      bottleneckBytesPerSec: this.bottleneckRate > 0 ? Math.round(this.bottleneckRate * 1000) : null,
      windowBytes: this.windowBytes(now),
      pacingBytesPerSec: pacing === null ? null : Math.round(pacing * 1000),
      headroom: this.#headroomActive(),
      rounds: this.#round,
    };
  }

  /** Headroom applies once the pipe's size is known: startup must climb even while the guest reads. */
  #headroomActive(): boolean {
    return this.#headroom && this.#pipeFull;
  }

  #addSample(s: RateSample): void {
    // A running max: samples no larger than the new one can never be the max again.
    while (this.#samples.length > 0 && this.#samples[this.#samples.length - 1]!.bytesPerMs <= s.bytesPerMs) this.#samples.pop();
    this.#samples.push(s);
    this.#expireSamples(s.at);
  }

  #expireSamples(now: number): void {
    // Keep the newest sample always: an estimate ages out only when a newer one replaces it.
    while (this.#samples.length > 1) {
      const head = this.#samples[0]!;
      if (this.#round - head.round < BW_FILTER_ROUNDS || now - head.at < BW_FILTER_MIN_MS) break;
      this.#samples.shift();
    }
  }

  /**
   * Even the best round trip of the last round was well above the min RTT: a queue stands at the bottleneck, ours.
   * "Well above" as HyStart reads it (an eighth of the min RTT, within 2..16 ms): noise stays under it.
   */
  get queueing(): boolean {
    return this.#queueAbove(this.#lastRoundMinRtt);
  }

  #queueAbove(rtt: number): boolean {
    if (!Number.isFinite(this.#minRtt) || !Number.isFinite(rtt)) return false;
    // A waiting guest feels every millisecond of queue: half the allowance then.
    const fraction = this.#headroom ? QUEUE_ALLOWANCE_FRACTION / 2 : QUEUE_ALLOWANCE_FRACTION;
    const allowance = Math.min(QUEUE_ALLOWANCE_MAX_MS, Math.max(QUEUE_ALLOWANCE_MIN_MS, this.#minRtt * fraction));
    return rtt > this.#minRtt + allowance;
  }

  /** In probe-bw's probing phase: above the estimate, by more each round while the rate keeps up. */
  get #probing(): boolean {
    return this.#phase === 'probe-bw' && this.#cycle === 0;
  }

  #startProbe(now: number): void {
    this.#cycle = 0;
    this.#cycleAt = now;
    this.#probeUp = 1;
    this.#probeFromRate = this.bottleneckRate;
    this.#probeStalls = 0;
  }

  /** The probe is over (a queue showed, or the rate stopped following): drain what it queued, then cruise. */
  #endProbe(now: number): void {
    this.#cycle = 1;
    this.#cycleAt = now;
    this.#probeUp = 1;
  }

  #onRound(appLimited: boolean, now: number): void {
    if (this.#phase === 'probe-rtt' && this.#probeRttRound < 0 && this.#inflight() <= PROBE_RTT_WINDOW_BYTES) this.#probeRttRound = this.#round;
    if (this.#probing && now - this.#cycleAt >= this.#minRtt) {
      // The rate followed the probe: the link had room, so probe higher (BBRv2's growing probe). Rate samples lag a
      // round trip behind what was sent, so the probe ends after two rounds without growth (one while the guest
      // waits: the probe's queue is what it would wait behind), or at once on a queue.
      const bw = this.bottleneckRate;
      if (bw >= this.#probeFromRate * PROBE_UP_GROWTH) {
        this.#probeUp = Math.min(STARTUP_GAIN, this.#probeUp * (this.#headroomActive() ? HEADROOM_PROBE_GAIN : PROBE_BW_GAINS[0]!));
        this.#probeFromRate = bw;
        this.#probeStalls = 0;
      } else if (++this.#probeStalls >= (this.#headroomActive() ? 1 : PROBE_UP_STALL_ROUNDS)) this.#endProbe(now);
    }
    // Startup also ends on a queue (onRtt), under the same conditions whatever the round says.
    if (this.#pipeFull || appLimited) return;
    const bw = this.bottleneckRate;
    // The gentler climb for a waiting guest grows less a round: a smaller step still counts as growth.
    if (bw >= this.#fullBw * (this.#headroom ? HEADROOM_STARTUP_GROWTH : STARTUP_GROWTH)) {
      this.#fullBw = bw;
      this.#fullBwRounds = 0;
      return;
    }
    // While the guest waits, only a queue ends startup (onRtt): a host busy for a few round trips (S's zero map at
    // cut-over, the guest's reads) looks like a plateau, and an estimate taken then would be climbed out of slowly.
    if (++this.#fullBwRounds >= STARTUP_FULL_ROUNDS && !this.#headroom) {
      this.#pipeFull = true;
      if (this.#phase === 'startup') this.#enter('drain', now);
    }
  }

  /** Time-driven moves between phases. */
  #advance(now: number): void {
    const bdp = this.bdp;
    switch (this.#phase) {
      case 'drain':
        // Until what startup queued has gone: in flight down to the pipe's size (or the window floor, on a short
        // path), or a few round trips at most.
        if (bdp === null || this.#inflight() <= Math.max(bdp, this.#limits.headroomFloorBytes) || this.#round - this.#phaseRound >= DRAIN_MAX_ROUNDS) this.#enter('probe-bw', now);
        return;
      case 'probe-bw':
        // Each phase lasts a min RTT; the probing phase ends by what it sees (#onRound, onRtt), not by time.
        if (!this.#probing && now - this.#cycleAt >= (Number.isFinite(this.#minRtt) ? this.#minRtt : 0)) {
          if (this.#cycle + 1 === PROBE_BW_GAINS.length) this.#startProbe(now);
          else {
            this.#cycle++;
            this.#cycleAt = now;
          }
        }
        return;
      case 'probe-rtt':
        // Held down at least PROBE_RTT_MS and one whole round trip at the small window; the min RTT is fresh then.
        if (this.#probeRttRound >= 0 && this.#round > this.#probeRttRound && now - this.#phaseAt >= PROBE_RTT_MS) {
          this.#minRttAt = now;
          this.#enter(this.#pipeFull ? 'probe-bw' : 'startup', now);
        }
        return;
      case 'startup':
        return;
    }
  }

  #enter(phase: PathPhase, now: number): void {
    this.#phase = phase;
    this.#phaseAt = now;
    this.#phaseRound = this.#round;
    if (phase === 'probe-bw') {
      this.#cycle = PROBE_BW_FIRST_PHASE;
      this.#cycleAt = now;
    }
    if (phase === 'probe-rtt') this.#probeRttRound = -1;
  }
}
