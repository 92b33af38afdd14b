// The submit options the document allows per role are exactly the standalone command's long options less those the
// service provides (and --max-bandwidth, on both): a flag added to `postcopy source` or `dest` fails here until the
// document says whether a job may take it. The client (`postcopy submit`) parses by the document, so it follows.
import { describe, expect, it } from 'vitest';
import { DEST_OPTIONS } from '../../src/cli/dest-command.js';
import { SOURCE_OPTIONS } from '../../src/cli/source-command.js';
import { submitOptionKinds } from '../../src/service/openapi-document.js';
import { OpenApiSchemas } from '../../src/service/openapi.js';

/** What the service gives every job itself: its state dir, events, progress, logs, TLS; and on D the migration port. */
const SERVICE_PROVIDED = ['state-dir', 'events', 'progress', 'progress-interval', 'log-level', 'tls-cert', 'tls-key', 'tls-ca'];
const TABLES = {
  source: { table: SOURCE_OPTIONS as Record<string, { type: string }>, provided: SERVICE_PROVIDED },
  dest: { table: DEST_OPTIONS as Record<string, { type: string }>, provided: [...SERVICE_PROVIDED, 'listen'] },
};

describe('schema/openapi.v1.json: the submit options', () => {
  it.each(['source', 'dest'] as const)('%s: the command\'s options less the service\'s, with the same kinds', (role) => {
    const { table, provided } = TABLES[role];
    // --max-bandwidth comes with the bandwidth work; until it is in the command's table it is expected here anyway.
    const expected: Record<string, string> = { 'max-bandwidth': 'string' };
    for (const [name, spec] of Object.entries(table)) if (!provided.includes(name)) expected[name] = spec.type;
    expect(submitOptionKinds(role)).toEqual(expected);
  });

  it('compiles strictly (ajv), every schema of components included', () => {
    const schemas = new OpenApiSchemas();
    for (const name of Object.keys(schemas.document.components.schemas)) expect(() => schemas.named(name), name).not.toThrow();
  });

  it('a flag is true or left out: false is refused (a service turning options into flags could not misread it)', () => {
    const submit = new OpenApiSchemas().named('SubmitRequest');
    expect(submit({ role: 'dest', options: { image: '/a', 'ticket-file': '/t', force: true } })).toBe(true);
    expect(submit({ role: 'dest', options: { image: '/a', 'ticket-file': '/t', force: false } })).toBe(false);
  });
});
