// The control API's OpenAPI document (schema/openapi.v1.json) as data: its shape, where it is, and what a submit's
// options may be per role. No ajv here: the CLI clients read the option names without paying for a compiler.
import { existsSync, readFileSync } from 'node:fs';
import type { JobRole } from './job-types.js';

/**
 * schema/ ships beside dist/ in the package: two levels up from src/service and from dist/service alike; the
 * benchmarks' build (dist/bench/src/service) finds it four levels up.
 */
export const OPENAPI_DOCUMENT_URL = [new URL('../../schema/openapi.v1.json', import.meta.url), new URL('../../../../schema/openapi.v1.json', import.meta.url)].find(
  (url) => existsSync(url),
) ?? new URL('../../schema/openapi.v1.json', import.meta.url);

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

export interface OpenApiResponse {
  $ref?: string;
  description?: string;
  headers?: Record<string, unknown>;
  content?: Record<string, { schema: unknown }>;
}

export interface OpenApiOperation {
  operationId: string;
  requestBody?: { required?: boolean; content: Record<string, { schema: unknown }> };
  responses: Record<string, OpenApiResponse>;
}

export type OpenApiPathItem = Partial<Record<(typeof HTTP_METHODS)[number], OpenApiOperation>> & { parameters?: unknown[] };

export interface OpenApiDocument {
  paths: Record<string, OpenApiPathItem>;
  components: { schemas: Record<string, unknown>; responses: Record<string, OpenApiResponse> };
  'x-postcopy-unrouted': { responses: Record<string, OpenApiResponse> };
}

/** A JSON pointer's token: `/` and `~` escaped (RFC 6901). */
export function pointerToken(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** The document as shipped (read each call: callers keep what they need). */
export function loadOpenApiDocument(): OpenApiDocument {
  return JSON.parse(readFileSync(OPENAPI_DOCUMENT_URL, 'utf8')) as OpenApiDocument;
}

/** A submit's option names for a role, each a value (string) or a flag (true): the document's SourceOptions/DestOptions. */
export function submitOptionKinds(role: JobRole, document: OpenApiDocument = loadOpenApiDocument()): Record<string, 'string' | 'boolean'> {
  const schema = document.components.schemas[role === 'source' ? 'SourceOptions' : 'DestOptions'] as { properties: Record<string, { $ref?: string }> };
  const kinds: Record<string, 'string' | 'boolean'> = {};
  for (const [name, prop] of Object.entries(schema.properties)) kinds[name] = prop.$ref === '#/components/schemas/OptionFlag' ? 'boolean' : 'string';
  return kinds;
}
