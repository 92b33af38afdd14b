// Every event src/ can emit is in schema/events.v1.json, and every event there is still emitted: a new event
// without a schema entry (or a schema entry left behind by a removed one) fails CI. The names are found in the
// source text: `events.emit('name', …)`, the session cores' emit effects, and the few emit sites whose name is a
// variable, each resolved below (a new such site fails until it is).
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventSchemaPath } from '../../bench/lib/event-schema.js';

const ROOT = join(__dirname, '..', '..');
const SRC = join(ROOT, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? sourceFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []));
}

/** Emit sites whose name is an expression, and where their names come from. */
const DYNAMIC_SITES: Record<string, (files: Map<string, string>) => string[]> = {
  // The cores' emit effects, collected by the effect patterns below.
  'src/source/source-agent.ts f.name': () => [],
  'src/dest/dest-effects.ts e.event': () => [],
  // D's own disk faults: the LocalFaultKind union.
  'src/dest/dest-agent.ts f.kind': (files) => unionMembers(files.get('src/dest/local-fault.ts')!, 'LocalFaultKind'),
};

function unionMembers(text: string, type: string): string[] {
  const m = new RegExp(`export type ${type} = ([^;]+);`).exec(text);
  if (!m) throw new Error(`type ${type} not found`);
  return [...m[1]!.matchAll(/'([^']+)'/g)].map((x) => x[1]!);
}

/** The names src/ emits, and the variable-named emit sites no rule above resolves. */
function emittedNames(): { names: Set<string>; unresolved: string[] } {
  const files = new Map(sourceFiles(SRC).map((f) => [relative(ROOT, f), readFileSync(f, 'utf8')]));
  const names = new Set<string>();
  const unresolved: string[] = [];
  for (const [file, text] of files) {
    for (const m of text.matchAll(/events\.emit\(\s*([^,)]+)/g)) {
      const arg = m[1]!.trim();
      const literal = /^'([^']+)'$/.exec(arg);
      if (literal) names.add(literal[1]!);
      else if (DYNAMIC_SITES[`${file} ${arg}`]) DYNAMIC_SITES[`${file} ${arg}`]!(files).forEach((n) => names.add(n));
      else unresolved.push(`${file}: events.emit(${arg}, …)`);
    }
    // Emit effects of the session cores: { type: 'emit', name: 'x' } (S) and { type: 'emit', event: 'x' } (D).
    for (const m of text.matchAll(/type: 'emit', (?:name|event): '([^']+)'/g)) names.add(m[1]!);
  }
  return { names, unresolved };
}

const schemaNames = (): string[] => (JSON.parse(readFileSync(eventSchemaPath(), 'utf8')) as { properties: { event: { enum: string[] } } }).properties.event.enum;

describe('event names', () => {
  it('every emit site in src/ has a name this test can read', () => {
    expect(emittedNames().unresolved).toEqual([]);
  });

  it('every event src/ emits is in schema/events.v1.json, and the schema lists no event src/ no longer emits', () => {
    const emitted = [...emittedNames().names].sort();
    expect(emitted.length).toBeGreaterThan(15); // the patterns still find the emit sites
    expect(emitted.filter((n) => !schemaNames().includes(n)), 'emitted but not in the schema').toEqual([]);
    expect(schemaNames().filter((n) => !emitted.includes(n)), 'in the schema but never emitted').toEqual([]);
  });
});
