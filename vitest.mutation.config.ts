// The tests Stryker runs against each mutant (npm run test:mutation): the unit tests of the mutated modules, all
// fast and in-process. End-to-end tests would kill more mutants, but at seconds per run they make a mutation
// run take hours on two cores; a mutant only they can see is a unit test missing.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/protocol/**/*.test.ts', 'test/dest/**/*.test.ts', 'test/source/**/*.test.ts', 'test/common/bits.test.ts', 'test/property/sessions.model.test.ts'],
    exclude: ['test/protocol/fuzz.test.ts'],
    testTimeout: 20_000,
    pool: 'forks',
  },
});
