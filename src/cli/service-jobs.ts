// The host service's jobs, built from the standalone commands' own options, checks and agent constructors: a job
// submitted as `{"role": "dest", "options": {...}}` runs exactly what `postcopy dest` with those flags would.
import { join, resolve } from 'node:path';
import { RolledBackError, UsageError, isPostcopyError } from '../common/errors.js';
import { readStateFile } from '../common/state-file.js';
import type { TlsFiles } from '../link/connect.js';
import type { DestAgent } from '../dest/dest-agent.js';
import { SESSION_FILE } from '../dest/dest-session.js';
import type { SimGuest } from '../guest/sim-guest.js';
import { ticketId } from '../protocol/handshake.js';
import type { AbortAnswer, JobCheck, JobContext, JobLauncher, JobOutcome, JobProgress, RunningJob } from '../service/job-launcher.js';
import type { JobOptions, JobRole } from '../service/job-types.js';
import { checkDestOptions, createDestAgent, DEST_OPTIONS } from './dest-command.js';
import { checkSourceOptions, createSourceAgent, SOURCE_OPTIONS } from './source-command.js';

type Values = Record<string, string | boolean | undefined>;

/** Options the service gives every job itself: its port, state dir, events, logs and TLS identity. */
export const SERVICE_GIVEN_OPTIONS = ['listen', 'state-dir', 'events', 'progress', 'progress-interval', 'log-level', 'tls-cert', 'tls-key', 'tls-ca', 'help'] as const;

/** Phases of D from which the guest's final state has come: the migration can only go forward. */
const DEST_PAST_CUTOVER = ['finishing', 'postcopy', 'complete', 'confirmed'];

/** The option names a job of `role` takes, and their kinds. */
export function jobOptionTable(role: JobRole): Record<string, { type: 'string' | 'boolean' }> {
  const table: Record<string, { type: 'string' | 'boolean' }> = { ...(role === 'dest' ? DEST_OPTIONS : SOURCE_OPTIONS) };
  for (const name of SERVICE_GIVEN_OPTIONS) delete table[name];
  return table;
}

/** A job's options as the command's parsed flags: unknown names, wrong kinds and the service's own are refused. */
function jobValues(role: JobRole, options: JobOptions): Values {
  const table = jobOptionTable(role);
  for (const [name, value] of Object.entries(options)) {
    if ((SERVICE_GIVEN_OPTIONS as readonly string[]).includes(name)) throw new UsageError('PC_ERR_USAGE', `option '${name}' is the service's to give, not a job's`);
    const spec = table[name];
    if (!spec) throw new UsageError('PC_ERR_USAGE', `'${name}' is not an option of a ${role} job (see 'postcopy ${role} --help')`);
    if (typeof value !== spec.type) throw new UsageError('PC_ERR_USAGE', `option '${name}' takes a ${spec.type}, got ${typeof value}`);
  }
  return { ...options };
}

export function serviceJobLauncher(host: { tls: TlsFiles | undefined }): JobLauncher {
  return {
    async check(role: JobRole, options: JobOptions, stateDir: string): Promise<JobCheck> {
      const values = jobValues(role, options);
      if (role === 'source') {
        const o = checkSourceOptions(values, stateDir);
        return { ticketId: null, image: o.isNbd ? o.imageArg : resolve(o.imageArg), bulkBytesPerSecond: o.bulkBytesPerSecond };
      }
      const image = resolve(String(values.image ?? ''));
      // A dest job that confirmed before the service was killed (its record not yet saved) has nothing to check.
      if (savedDestPhase(stateDir) === 'confirmed') return { ticketId: null, image, bulkBytesPerSecond: null };
      const o = await checkDestOptions(values, stateDir);
      return { ticketId: ticketId(o.ticket), image: resolve(o.imagePath), bulkBytesPerSecond: o.bulkBytesPerSecond };
    },

    async start(role: JobRole, options: JobOptions, ctx: JobContext): Promise<RunningJob> {
      const values = jobValues(role, options);
      return role === 'dest' ? startDestJob(values, ctx) : startSourceJob(values, ctx, host.tls);
    },
  };
}

function savedDestPhase(stateDir: string): string | null {
  try {
    return readStateFile<{ phase?: string }>(join(stateDir, SESSION_FILE))?.phase ?? null;
  } catch {
    return null;
  }
}

/** A migration's end as a job's: rolled back is `aborted` (the guest stays on S), anything else unfinished `failed`. */
function outcomeOf(e: unknown): JobOutcome {
  const error = { code: isPostcopyError(e) ? e.code : 'PC_ERR_INTERNAL', message: e instanceof Error ? e.message : String(e) };
  return { state: e instanceof RolledBackError ? 'aborted' : 'failed', error };
}

function latencyOf(summary: { count: number; p50Ms: number; p99Ms: number } | undefined): JobProgress['demandLatency'] {
  if (!summary || summary.count === 0) return { count: 0, p50Ms: null, p99Ms: null };
  return { count: summary.count, p50Ms: summary.p50Ms, p99Ms: summary.p99Ms };
}

async function startDestJob(values: Values, ctx: JobContext): Promise<RunningJob> {
  if (savedDestPhase(ctx.stateDir) === 'confirmed') return alreadyDone('dest');
  const o = await checkDestOptions(values, ctx.stateDir);
  const { agent, migrator, nbdHold } = await createDestAgent(values, { ...o, listen: { host: '', port: 0 } }, {
    log: ctx.log,
    events: ctx.events,
    listener: ctx.migrationPort(ticketId(o.ticket)),
    checkPorts: false,
    onDemandLatency: ctx.onDemandLatency,
    bulkRate: ctx.bulkRate,
  });
  try {
    await agent.start();
  } catch (e) {
    await nbdHold?.release();
    await agent.close();
    throw e;
  }
  let idleAbort: ((o: JobOutcome) => void) | null = null;
  const aborted = new Promise<JobOutcome>((resolve) => (idleAbort = resolve));
  const finished = agent.done.then(
    async (result): Promise<JobOutcome> => {
      await nbdHold?.release();
      const guest = result.guest as SimGuest | null;
      if (guest) {
        // The simulated guest stops with its job; what it wrote is kept for verification, as `postcopy dest` keeps it.
        await guest.pause();
        guest.saveWriteMap(join(ctx.jobDir, 'guest-writes.json'));
      }
      if (migrator?.guestOnExport) {
        try {
          const moved = await migrator.pivot(o.imagePath);
          ctx.log.info({ file: moved.file, durationMs: moved.durationMs }, 'the guest runs on the local image now');
        } catch (e) {
          ctx.log.error({ err: (e as Error).message }, 'the guest could not move to the local image; it stays on the export, which keeps serving');
        }
      }
      return { state: 'completed', error: null };
    },
    async (e: unknown) => {
      await nbdHold?.release();
      return outcomeOf(e);
    },
  );
  return {
    done: Promise.race([finished, aborted]),
    progress: () => destProgress(agent),
    abort(reason: string): AbortAnswer {
      const answer = agent.abort(reason);
      if (answer === 'idle') {
        void agent
          .close()
          .catch((e: unknown) => ctx.log.error({ err: (e as Error).message }, 'closing the aborted dest job\'s agent failed'))
          .finally(() => nbdHold?.release());
        idleAbort!({ state: 'aborted', error: { code: 'ABORTED', message: 'aborted before any source came; nothing was started' } });
        return { accepted: true };
      }
      if (answer === 'rolling-back') return { accepted: true };
      const bytes = agent.store?.bytesOnlyOnSource ?? 0;
      if (!DEST_PAST_CUTOVER.includes(agent.phase)) return { accepted: false, pastCutover: false, reason: `the migration is between steps here (phase ${agent.phase}); abort it on the source` };
      return { accepted: false, pastCutover: true, reason: `the guest's final state has reached this destination (phase ${agent.phase}): the guest runs here and the source holds ${bytes} bytes of its disk this host lacks; the migration can only finish` };
    },
    setMaxDowntime: () => false,
    async close() {
      await agent.close();
      await nbdHold?.release();
    },
  };
}

function destProgress(agent: DestAgent): JobProgress {
  const store = agent.store;
  const total = store?.size ?? 0;
  const onlyOnSource = store ? store.bytesOnlyOnSource : 0;
  return {
    phase: agent.phase,
    sessionId: agent.sessionId,
    dataTotalBytes: total,
    dataProcessedBytes: total - onlyOnSource,
    bytesOnlyOnSource: onlyOnSource,
    downtimeMs: null,
    demandLatency: latencyOf(store?.demandLatency.summary()),
    reconnects: agent.resumes,
    bytesByClass: { urgent: store?.stats.bytesFetchedDemand ?? 0, bulk: store?.stats.bytesFetchedBulk ?? 0 },
    maxDowntimeMs: null,
    pastCutover: DEST_PAST_CUTOVER.includes(agent.phase),
  };
}

async function startSourceJob(values: Values, ctx: JobContext, tls: TlsFiles | undefined): Promise<RunningJob> {
  const o = checkSourceOptions(values, ctx.stateDir);
  const { agent, guest, migrator } = await createSourceAgent(values, o, { log: ctx.log, events: ctx.events, tls, bulkRate: ctx.bulkRate });
  const done = agent.run().then(
    (): JobOutcome => ({ state: 'completed', error: null }),
    (e: unknown) => outcomeOf(e),
  );
  const ended = done.then(async (outcome) => {
    // The guest goes on here after a rollback; the service's simulated guest has nowhere to go on, so it stops.
    await guest?.pause();
    migrator?.close();
    return outcome;
  });
  return {
    done: ended,
    progress(): JobProgress {
      const p = agent.progress();
      return {
        phase: p.phase,
        sessionId: agent.sessionId,
        dataTotalBytes: p.bytesTotal,
        dataProcessedBytes: p.bytesTotal - p.bytesOnlyOnSource,
        bytesOnlyOnSource: p.bytesOnlyOnSource,
        downtimeMs: agent.downtimeMs,
        demandLatency: { count: 0, p50Ms: null, p99Ms: null },
        reconnects: agent.reconnects,
        bytesByClass: { urgent: p.bytesServedDemand, bulk: p.bytesServedBulk },
        maxDowntimeMs: agent.maxDowntimeMs,
        pastCutover: agent.pastCutover,
      };
    },
    abort(reason: string): AbortAnswer {
      if (agent.abort(reason)) return { accepted: true };
      if (agent.pastCutover) {
        return { accepted: false, pastCutover: true, reason: `the guest runs on the destination and up to ${agent.bytesOnlyHere} bytes of its disk exist only on this source: the migration can only finish` };
      }
      return { accepted: false, pastCutover: false, reason: `the migration is ending already (phase ${agent.phase})` };
    },
    setMaxDowntime: (ms: number) => agent.setMaxDowntime(ms),
    close: () => agent.close(),
  };
}

/** A job whose migration had ended before the service restarted. */
function alreadyDone(role: JobRole): RunningJob {
  const none = { count: 0, p50Ms: null, p99Ms: null };
  return {
    done: Promise.resolve({ state: 'completed', error: null }),
    progress: () => ({ phase: 'confirmed', sessionId: null, dataTotalBytes: 0, dataProcessedBytes: 0, bytesOnlyOnSource: 0, downtimeMs: null, demandLatency: none, reconnects: 0, bytesByClass: { urgent: 0, bulk: 0 }, maxDowntimeMs: null, pastCutover: role === 'dest' }),
    abort: () => ({ accepted: false, pastCutover: false, reason: 'the migration is complete' }),
    setMaxDowntime: () => false,
    close: async () => {},
  };
}
