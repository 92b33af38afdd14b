// The events interface as the readers check it: every line a test or the bench reads from an --events file is
// validated against schema/events.v1.json (the agents themselves never validate: ajv is a devDependency).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const SCHEMA_FILE = join('schema', 'events.v1.json');

/** The checkout's schema file: found upwards from here (bench/lib in the tree, dist/bench/bench/lib when built). */
export function eventSchemaPath(): string {
  for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
    if (existsSync(join(d, SCHEMA_FILE))) return join(d, SCHEMA_FILE);
    if (dirname(d) === d) throw new Error(`${SCHEMA_FILE} not found above ${fileURLToPath(import.meta.url)}`);
  }
}

let compiled: ValidateFunction | null = null;

/** The compiled schema (strict: an unknown keyword or a typo in the schema itself fails here). */
export function eventValidator(): ValidateFunction {
  if (compiled) return compiled;
  // strictRequired off: an event's required fields may be defined in a shared $def it refers to (progress, complete).
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false });
  (addFormats as unknown as (a: Ajv2020) => void)(ajv);
  compiled = ajv.compile(JSON.parse(readFileSync(eventSchemaPath(), 'utf8')) as object);
  return compiled;
}

/** ajv's complaints about one event line, one per line (empty when it is valid). */
export function eventErrors(line: unknown): string[] {
  const validate = eventValidator();
  if (validate(line)) return [];
  return (validate.errors ?? []).map(describe);
}

function describe(e: ErrorObject): string {
  const extra = e.keyword === 'unevaluatedProperties' || e.keyword === 'additionalProperties' ? ` (${JSON.stringify(e.params)})` : '';
  return `${e.instancePath || '/'} ${e.message ?? e.keyword}${extra}`;
}

/** Throws naming the event and what is wrong with it: a reader must not go on with a line the schema refuses. */
export function assertValidEvent(line: unknown, where: string): void {
  const errors = eventErrors(line);
  if (errors.length) throw new Error(`${where}: an event does not match schema/events.v1.json:\n  ${JSON.stringify(line)}\n  ${errors.join('\n  ')}`);
}
