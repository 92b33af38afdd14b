// In-process migrations over real TCP loopback: a DestAgent and a SourceAgent with simulated guests,
// fault layers on either socket, and a watcher for the one-runner invariant.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { silentLogger, type Logger } from '../../src/common/logger.js';
import { nullEvents } from '../../src/common/events.js';
import { DestAgent, type GuestFactory } from '../../src/dest/dest-agent.js';
import { SourceAgent } from '../../src/source/source-agent.js';
import { FileImage } from '../../src/image/file-image.js';
import type { SourceImage } from '../../src/common/block-device.js';
import type { FinalCheckMode } from '../../src/dest/block-store.js';
import type { DestGuestMigrator, SourceGuestMigrator } from '../../src/guest/migrator.js';
import { connectOnce, type Endpoint } from '../../src/link/connect.js';
import { parseTicket, type Ticket } from '../../src/protocol/handshake.js';
import { SimGuest } from '../../src/guest/sim-guest.js';
import type { SimGuestSpec } from '../../src/guest/types.js';
import { withDeadline } from '../helpers/wait.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { simGuestDefinition, restoreGuest } from '../../src/cli/guest-factory.js';

export const MiB = 1024 * 1024;

export interface HarnessOptions {
  imageBytes?: number;
  ramBytes?: number;
  seed?: number;
  guest?: boolean;
  /** Wraps D's accepted sockets (fault layers); called per connection. */
  wrapDest?: (s: Socket, n: number) => Duplex;
  /** Wraps S's outgoing sockets; called per connection. */
  wrapSource?: (s: Socket, n: number) => Duplex;
  createGuest?: GuestFactory;
  ticket?: string;
  keepaliveTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  log?: Logger;
  stateDirs?: boolean;
  /** Wrap S's image (backend fault layers). */
  wrapImage?: (img: FileImage) => SourceImage & { makeReadOnly?: () => void };
  dirtyPagesPerSec?: number;
  diskOpsPerSec?: number;
  abortGraceMs?: number;
  sourceMigrator?: SourceGuestMigrator;
  destMigrator?: DestGuestMigrator;
  finalCheck?: FinalCheckMode;
  /** S's block size (default 64 KiB). */
  blockSize?: number;
  /** D's demand-latency hook (DestAgentOptions.onDemandLatency). */
  onDemandLatency?: (ms: number) => void;
}

export interface Harness {
  dir: string;
  src: string;
  dst: string;
  dest: DestAgent;
  source: SourceAgent;
  sourceGuest: SimGuest | null;
  destGuest: () => SimGuest | null;
  endpoint: Endpoint;
  /** Samples both guests' running flags every ms; returns the number of samples with both running. */
  overlapSamples: () => number;
  /**
   * Stop both guests, S and D, and remove the files. Never hangs: each step is bounded (a guest waiting for a
   * block that never comes is left waiting), and a step that ran out its bound is named in the error thrown
   * once every other step has run.
   */
  cleanup(): Promise<void>;
}

/** How long one cleanup step may take (a guest's pause, S's close, D's close). */
export const CLEANUP_STEP_MS = 5000;

/** Resolves with `null` when `p` settles, or with `what` once `ms` have passed. */
function bounded(p: Promise<unknown>, ms: number, what: string): Promise<string | null> {
  const settled = p.then(() => null, () => null);
  return withDeadline(settled, ms, () => `${what} did not finish within ${ms} ms`).catch((e: Error) => e.message);
}

export async function startHarness(o: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'pc-int-'));
  const src = join(dir, 'src.img');
  const dst = join(dir, 'dst.img');
  const imageBytes = o.imageBytes ?? 16 * MiB;
  generateDemoImage(src, imageBytes, o.seed ?? 5);
  const ticket: Ticket = parseTicket(o.ticket ?? 'integration-test-ticket-secret-0123456789');
  const log = o.log ?? silentLogger();
  const linkOpts = { keepaliveIntervalMs: 100, keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 1500, handshakeTimeoutMs: o.handshakeTimeoutMs ?? 2000 };
  let destConn = 0;
  let srcConn = 0;
  let destAgent: DestAgent;
  const dest = (destAgent = new DestAgent({
    listen: { host: '127.0.0.1', port: 0 },
    imagePath: dst,
    stateDir: join(dir, 'dstate'),
    ticket,
    log,
    events: nullEvents,
    createGuest: o.createGuest ?? ((def, ram, state) => restoreGuest(def, ram, state, destAgent.store!.size, log)),
    link: linkOpts,
    abortGraceMs: o.abortGraceMs ?? 2000,
    confirmGraceMs: 1000,
    ...(o.destMigrator ? { migrator: o.destMigrator } : {}),
    ...(o.finalCheck ? { finalCheck: o.finalCheck } : {}),
    ...(o.onDemandLatency ? { onDemandLatency: o.onDemandLatency } : {}),
    ...(o.wrapDest ? { wrapSocket: (s: Socket) => o.wrapDest!(s, destConn++) } : {}),
  }));
  const endpoint = await dest.start();
  const image = FileImage.open(src, { writable: o.guest !== false });
  let sourceGuest: SimGuest | null = null;
  let spec: SimGuestSpec | null = null;
  if (o.guest !== false) {
    spec = {
      kind: 'sim',
      seed: o.seed ?? 5,
      ramBytes: o.ramBytes ?? 8 * MiB,
      dirtyPagesPerSec: o.dirtyPagesPerSec ?? 2000,
      diskOpsPerSec: o.diskOpsPerSec ?? 800,
      writeRatio: 0.4,
      residentFraction: 0.5,
    };
    sourceGuest = new SimGuest(spec, { diskSize: image.size, log });
  }
  const source = new SourceAgent({
    connect: endpoint,
    image: o.wrapImage ? o.wrapImage(image) : image,
    guestDisk: image,
    guest: sourceGuest,
    guestDefinition: spec ? simGuestDefinition(spec) : null,
    ...(o.sourceMigrator ? { migrator: o.sourceMigrator } : {}),
    ticket,
    ...(o.stateDirs ? { stateDir: join(dir, 'sstate') } : {}),
    blockSize: o.blockSize ?? 64 * 1024,
    maxDowntimeMs: 50,
    connectTimeoutMs: 5000,
    log,
    events: nullEvents,
    link: linkOpts,
    openSocket: async (ep: Endpoint) => {
      const s = await connectOnce(ep, 2000);
      return o.wrapSource ? o.wrapSource(s, srcConn++) : s;
    },
  });
  let overlaps = 0;
  const destGuest = () => dest.guest as SimGuest | null;
  const sampler = setInterval(() => {
    if (sourceGuest?.running && destGuest()?.running) overlaps++;
  }, 1);
  return {
    dir,
    src,
    dst,
    dest,
    source,
    sourceGuest,
    destGuest,
    endpoint,
    overlapSamples: () => overlaps,
    async cleanup() {
      clearInterval(sampler);
      // Both pauses stop the guests' timers at once; D's may then wait for a block from S: bounded.
      const late = await Promise.all([
        bounded(sourceGuest?.pause() ?? Promise.resolve(), CLEANUP_STEP_MS, "S's guest pause"),
        bounded(destGuest()?.pause() ?? Promise.resolve(), CLEANUP_STEP_MS, "D's guest pause (waiting for a block?)"),
      ]);
      // S stops reconnecting (a no-op once it has confirmed or rolled back), then D drops its links and store.
      late.push(await bounded(source.close(), CLEANUP_STEP_MS, "S's close"));
      late.push(await bounded(dest.close(), CLEANUP_STEP_MS, "D's close"));
      rmSync(dir, { recursive: true, force: true });
      const names = late.filter((x): x is string => x !== null);
      if (names.length > 0) throw new Error(`harness cleanup: ${names.join('; ')}`);
    },
  };
}

export function writeTicketFile(dir: string, text: string): string {
  const p = join(dir, 'ticket');
  writeFileSync(p, text);
  return p;
}
