// The submit options the document allows per role are exactly the standalone command's long options less those the
// service provides (and --max-bandwidth, on both): a flag added to `postcopy source` or `dest` fails here until the
// document says whether a job may take it. The client (`postcopy submit`) parses by the document, so it follows.
import { describe, expect, it } from 'vitest';
import { jobOptionTable } from '../../src/cli/service-jobs.js';
import { submitOptionKinds } from '../../src/service/openapi-document.js';
import { OpenApiSchemas } from '../../src/service/openapi.js';


describe('schema/openapi.v1.json: the submit options', () => {
  it.each(['source', 'dest'] as const)('%s: the command\'s options less the service\'s, with the same kinds', (role) => {
    // The table the service's jobs are checked against (service-jobs.ts): the command's, less what the service gives.
    const expected = Object.fromEntries(Object.entries(jobOptionTable(role)).map(([name, spec]) => [name, spec.type]));
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
