// fast-check parameters for every property test: FC_SEED and FC_RUNS from the environment, and the
// seed printed when a property fails so the run can be replayed with FC_SEED=… .
import fc from 'fast-check';

const envSeed = process.env.FC_SEED;
const envRuns = process.env.FC_RUNS;

/** The seed this run uses (from FC_SEED, else fresh). */
export const FC_SEED = envSeed !== undefined && envSeed !== '' ? Number(envSeed) : Date.now() ^ (Math.random() * 0x7fffffff);

/** Runs per property: FC_RUNS, else the given default. */
export function fcRuns(defaultRuns: number): number {
  return envRuns !== undefined && envRuns !== '' ? Number(envRuns) : defaultRuns;
}

/** Parameters for fc.assert: fixed seed, run count, and a failure report that names the seed. */
export function fcParams<T>(defaultRuns = 200): fc.Parameters<T> {
  return {
    seed: FC_SEED,
    numRuns: fcRuns(defaultRuns),
    reporter: (details) => {
      if (details.failed) {
        throw new Error(`${fc.defaultReportMessage(details)}\n(replay with FC_SEED=${FC_SEED})`);
      }
    },
  };
}
