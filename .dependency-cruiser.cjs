// The import graph DESIGN.md §2 asks for, checked by dependency-cruiser (`npm run lint:deps`, and in
// `npm test` through test/structure/import-graph.test.ts): no cycles anywhere, every arrow pointing down.
//
//   cli → service → source/dest → link → protocol → common
//                   source/dest → nbd → common
//                   source/dest → image (files, extent scan) → common
//                   source/dest → guest, hypervisor (adapters) → protocol (types), common
//
// The table below is the whole policy: a layer of src/ may import only the layers it lists (and itself).

/** For each folder of src/, the folders of src/ it may import besides itself, and why. */
const LAYERS = {
  common: { may: [], why: 'the base every layer shares: it imports nothing of ours' },
  protocol: { may: ['common'], why: 'the wire format is pure: Buffers in, values out' },
  nbd: { may: ['common'], why: 'the NBD client and server know nothing of migrations' },
  image: {
    may: ['protocol', 'common'],
    why: 'image files and their extent scan are an adapter below source/dest (sized by the wire chunk)',
  },
  link: { may: ['protocol', 'common'], why: 'the migration connection carries protocol frames, nothing above' },
  guest: {
    may: ['protocol', 'common'],
    why: 'the simulated guest is an adapter below source/dest (it reads the guest description type)',
  },
  hypervisor: {
    may: ['guest', 'nbd', 'protocol', 'common'],
    why: 'the QEMU adapters implement the guest interface and reach disks over NBD',
  },
  source: {
    may: ['link', 'nbd', 'image', 'guest', 'hypervisor', 'protocol', 'common'],
    why: 'an agent uses the layers below it, never the other agent, the service or the CLI',
  },
  dest: {
    may: ['link', 'nbd', 'image', 'guest', 'hypervisor', 'protocol', 'common'],
    why: 'an agent uses the layers below it, never the other agent, the service or the CLI',
  },
  service: {
    may: ['source', 'dest', 'link', 'nbd', 'image', 'guest', 'hypervisor', 'protocol', 'common'],
    why: 'the host service runs the agents; only the CLI sits above it',
  },
  cli: {
    may: ['service', 'source', 'dest', 'link', 'nbd', 'image', 'guest', 'hypervisor', 'protocol', 'common'],
    why: 'the command is the top: it may wire anything below it',
  },
};

/**
 * Imports that break a rule today and are removed by another change of issue 11 before it merges. Each is
 * reported as a warning (seen on every run, not failing it) and exempts exactly that edge or cycle.
 */
const KNOWN_EXCEPTIONS = [];
const KNOWN_CYCLES = [];

const escape = (path) => path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const anyOf = (paths) => `^(${paths.map(escape).join('|')})$`;

function layerRules() {
  const rules = [];
  for (const [layer, { may, why }] of Object.entries(LAYERS)) {
    const allowed = `^src/(${[layer, ...may].join('|')})/`;
    const comment = `src/${layer} may import only ${may.length ? may.map((m) => `src/${m}`).join(', ') : 'itself'}: ${why} (DESIGN.md §2)`;
    const exceptions = KNOWN_EXCEPTIONS.filter((e) => e.from.startsWith(`src/${layer}/`));
    rules.push({
      name: `layer-${layer}`,
      comment,
      severity: 'error',
      from: { path: `^src/${layer}/`, ...(exceptions.length ? { pathNot: anyOf(exceptions.map((e) => e.from)) } : {}) },
      to: { path: '^src/', pathNot: allowed },
    });
    for (const e of exceptions) {
      rules.push({
        name: `layer-${layer}`,
        comment,
        severity: 'error',
        from: { path: anyOf([e.from]) },
        to: { path: '^src/', pathNot: `${allowed}|${anyOf([e.to])}` },
      });
      rules.push({
        name: `known-exception-layer-${layer}`,
        comment: `${comment}. Known, removed before merge: ${e.why}`,
        severity: 'warn',
        from: { path: anyOf([e.from]) },
        to: { path: anyOf([e.to]) },
      });
    }
  }
  return rules;
}

const cycleComment = 'an import cycle: modules that cannot be understood, tested or loaded one without the other';
const knownCycleFiles = KNOWN_CYCLES.flatMap((c) => c.files);

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: cycleComment,
      severity: 'error',
      from: knownCycleFiles.length ? { pathNot: anyOf(knownCycleFiles) } : {},
      to: { circular: true },
    },
    ...KNOWN_CYCLES.map((c) => ({
      name: 'known-exception-circular',
      comment: `${cycleComment}. Known, removed before merge: ${c.why}`,
      severity: 'warn',
      from: { path: anyOf(c.files) },
      to: { circular: true, viaOnly: { path: anyOf(c.files) } },
    })),
    ...layerRules(),
    {
      name: 'layer-unknown',
      comment: 'every folder of src/ has a place in the layer table of .dependency-cruiser.cjs (DESIGN.md §2): add it there',
      severity: 'error',
      from: { path: `^src/(?!(${Object.keys(LAYERS).join('|')})/)` },
      to: {},
    },
    {
      name: 'no-test-imports',
      comment: 'shipped code and benchmarks never depend on test/ (tests depend on them)',
      severity: 'error',
      from: { path: '^(src|bench)/' },
      to: { path: '^test/' },
    },
    {
      name: 'no-bench-imports',
      comment: 'src never depends on bench/ (bench measures src)',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^bench/' },
    },
    {
      name: 'pure-codecs',
      comment:
        'the codecs (src/protocol, the NBD codec files) are pure: no sockets, files, processes or timers (STYLE.md 1)',
      severity: 'error',
      from: { path: '^src/(protocol/|nbd/(codec.*|.*-decoder|.*-encoder|option-parsers|byte-queue|constants.*|wire-.*)\\.ts$)' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(net|tls|dgram|fs|fs/promises|child_process|timers|timers/promises|http|https)$' },
    },
  ],
  options: {
    // Type-only imports count: a cycle or an upward arrow through types is still a dependency to read past.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.bench.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
