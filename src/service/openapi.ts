// The control API's OpenAPI document (schema/openapi.v1.json) compiled by ajv: the one source of truth for the
// routes, what a request body may hold (control-api.ts checks each) and what each answer is (the conformance test).
import { readFileSync } from 'node:fs';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

/** schema/ ships beside dist/ in the package: two levels up from src/service and from dist/service alike. */
export const OPENAPI_DOCUMENT_URL = new URL('../../schema/openapi.v1.json', import.meta.url);

/** The document's own key in ajv: schemas are reached as `openapi.v1#/json/pointer`. */
const DOCUMENT_KEY = 'openapi.v1';

/** OpenAPI's top-level fields: not JSON Schema keywords, so ajv's strict mode is told they are known. */
const OPENAPI_ROOT_FIELDS = ['openapi', 'info', 'jsonSchemaDialect', 'servers', 'paths', 'webhooks', 'components', 'security', 'tags', 'externalDocs'];

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

/** The document and its schemas, each compiled once, on first use. */
export class OpenApiSchemas {
  readonly document: OpenApiDocument;
  readonly #ajv: Ajv2020;

  constructor(document: OpenApiDocument = JSON.parse(readFileSync(OPENAPI_DOCUMENT_URL, 'utf8')) as OpenApiDocument) {
    this.document = document;
    // Strict: an unknown keyword or a typo in the document fails here, not silently at a request.
    this.#ajv = new Ajv2020({ strict: true, allowUnionTypes: true });
    (addFormats as unknown as (a: Ajv2020) => void)(this.#ajv);
    this.#ajv.addVocabulary([...OPENAPI_ROOT_FIELDS, ...Object.keys(document).filter((k) => k.startsWith('x-'))]);
    this.#ajv.addSchema(document, DOCUMENT_KEY);
  }

  /** The schema at a JSON pointer into the document (`/components/schemas/JobStatus`), compiled. */
  at(pointer: string): ValidateFunction {
    const validate = this.#ajv.getSchema(`${DOCUMENT_KEY}#${pointer}`);
    if (!validate) throw new Error(`schema/openapi.v1.json has no schema at ${pointer}`);
    return validate;
  }

  /** A named schema of components/schemas. */
  named(name: string): ValidateFunction {
    return this.at(`/components/schemas/${pointerToken(name)}`);
  }
}

/** ajv's first complaint as one line for the client: where, what, and the offending property name if any. */
export function describeSchemaError(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'does not match its schema';
  const where = e.instancePath === '' ? 'the body' : e.instancePath.slice(1).replace(/\//g, '.');
  if (e.keyword === 'additionalProperties') return `${where}: unknown field '${String(e.params.additionalProperty)}'`;
  if (e.keyword === 'required') return `${where}: '${String(e.params.missingProperty)}' is required`;
  if (e.keyword === 'enum') return `${where} must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  return `${where} ${e.message ?? `fails ${e.keyword}`}`;
}
