// fast-check settings for guest tests: FC_SEED / FC_RUNS from the environment, and the seed printed
// on failure so any run can be replayed exactly.
import fc from 'fast-check';

export function fcParams(defaultRuns = 100): { seed: number; numRuns: number } {
  const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const numRuns = process.env.FC_RUNS ? Number(process.env.FC_RUNS) : defaultRuns;
  return { seed, numRuns };
}

/** fc.assert with fcParams(); on failure prints how to replay it. */
export function fcAssert<T>(prop: fc.IProperty<T>, defaultRuns?: number): void {
  const params = fcParams(defaultRuns);
  try {
    fc.assert(prop, params);
  } catch (err) {
    console.error(`fast-check failed with seed ${params.seed}: replay with FC_SEED=${params.seed} FC_RUNS=${params.numRuns}`);
    throw err;
  }
}
