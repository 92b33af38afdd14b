// fast-check parameters shared by every property test: FC_SEED replays a run, FC_RUNS scales it, and a
// failing property names the seed (FC_SEED=<seed>) so the exact run can be replayed.
//
//   FC_SEED=123 npx vitest run test/protocol      # replay (every property in the run uses this seed)
//   FC_RUNS=10000 npx vitest run test/protocol    # soak: a cheap property (default 200) runs 10000 times,
//                                                 # a property whose default is d runs d × FC_RUNS / 200
//   FC_SEED=123 FC_PATH=4:1:0 npx vitest run -t 'name'   # jump straight to a shrunk counterexample
import fc from 'fast-check';

/** Run count a cheap property gets by default; FC_RUNS rescales every property relative to it. */
export const FC_BASE_RUNS = 200;

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The seed of this run: FC_SEED, else a fresh 32-bit one (printed whenever a property fails). */
export const FC_SEED: number = envInt('FC_SEED') ?? (Date.now() ^ Math.floor(Math.random() * 0x7fffffff)) | 0;

const FC_PATH = process.env.FC_PATH?.trim() || undefined;

/** Runs for a property whose normal-run default is `defaultRuns`, scaled by FC_RUNS (relative to FC_BASE_RUNS). */
export function fcRuns(defaultRuns: number = FC_BASE_RUNS): number {
  const scale = envInt('FC_RUNS');
  if (scale === undefined || scale <= 0) return defaultRuns;
  return Math.max(1, Math.round((defaultRuns * scale) / FC_BASE_RUNS));
}

/** The replay hint a failure prints. */
export function replayHint(seed: number): string {
  return `FC_SEED=${seed}`;
}

/**
 * Parameters for fc.assert / fc.check: the run's seed, the scaled run count, and a reporter whose error
 * carries fast-check's own report (counterexample, seed, path) plus `replay with FC_SEED=<seed>`.
 * The reporter is synchronous, so the same parameters serve fc.property and fc.asyncProperty.
 */
export function fcParams<T = unknown>(defaultRuns: number = FC_BASE_RUNS, extra: Partial<fc.Parameters<T>> = {}): fc.Parameters<T> {
  return {
    seed: FC_SEED,
    numRuns: fcRuns(defaultRuns),
    ...(FC_PATH !== undefined ? { path: FC_PATH } : {}),
    ...extra,
    reporter: (details) => {
      if (!details.failed) return;
      // FC_SEED alone replays the whole run; FC_PATH (with -t selecting this test) jumps to the shrunk case.
      const hint = `${replayHint(details.seed)}${details.counterexamplePath ? ` (shrunk case: add FC_PATH=${details.counterexamplePath} with -t '<this test>')` : ''}`;
      const report = fc.defaultReportMessage(details) ?? 'property failed';
      // Printed as well as thrown: a runner that truncates error messages still shows how to replay.
      console.error(`fast-check property failed: replay with ${hint}`);
      throw new Error(`${report}\n\nreplay with ${hint}`, { cause: details.errorInstance });
    },
  };
}
