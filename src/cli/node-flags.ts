// V8 flags the agents run with. They allocate short-lived buffers and frames at a high rate; left alone, V8 grows
// its young generation to 16 MiB semi-spaces and keeps them resident, so an agent's peak RSS grows with the length
// of the migration (BENCHMARKS.md: about +30 MiB per agent at 16 GiB). 2 MiB costs no measured speed.
// They must be given at start-up (v8.setFlagsFromString is too late for the heap's layout): main.js carries them
// in its `#!/usr/bin/env -S node ...` line, and whoever starts an agent with `node main.js` passes them too.
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];
