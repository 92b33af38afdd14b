// The control API's OpenAPI document compiled by ajv: the one source of truth for what a request body may hold
// (control-api.ts checks each) and what each answer is (the conformance test).
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { loadOpenApiDocument, pointerToken, type OpenApiDocument } from './openapi-document.js';

/** The document's own key in ajv: schemas are reached as `openapi.v1#/json/pointer`. */
const DOCUMENT_KEY = 'openapi.v1';

/** OpenAPI's top-level fields: not JSON Schema keywords, so ajv's strict mode is told they are known. */
const OPENAPI_ROOT_FIELDS = ['openapi', 'info', 'jsonSchemaDialect', 'servers', 'paths', 'webhooks', 'components', 'security', 'tags', 'externalDocs'];

/** The document and its schemas, each compiled once, on first use. */
export class OpenApiSchemas {
  readonly document: OpenApiDocument;
  readonly #ajv: Ajv2020;

  constructor(document: OpenApiDocument = loadOpenApiDocument()) {
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
