// The control API's answers checked against schema/openapi.v1.json: the request's operation (or the document's
// x-postcopy-unrouted answers) must document the status, its headers, and a body its schema accepts (none for a
// response without content). Reused by the lead's test against the real service. Route matching is its own here,
// not the server's: a server that routes wrongly is caught, not agreed with.
import http from 'node:http';
import { HTTP_METHODS, pointerToken, type OpenApiResponse } from '../../src/service/openapi-document.js';
import { OpenApiSchemas } from '../../src/service/openapi.js';

export interface ApiAnswer {
  method: string;
  path: string;
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export interface RequestOptions {
  /** Sent as is (no JSON encoding); with `body` undefined. */
  raw?: string | Buffer;
  /** Content-Type of a body (default application/json when there is one). */
  contentType?: string | null;
  /** Send the body chunked (no Content-Length). */
  chunked?: boolean;
}

/** One request over the Unix socket; resolves with the whole answer (never rejects on a status). */
export function apiRequest(socketPath: string, method: string, path: string, body?: unknown, o: RequestOptions = {}): Promise<ApiAnswer> {
  const payload = o.raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const headers: Record<string, string | number> = {};
  if (payload !== undefined) {
    if (o.contentType !== null) headers['Content-Type'] = o.contentType ?? 'application/json';
    if (!o.chunked) headers['Content-Length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ method, path, status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    // end(payload) alone would make node declare a Content-Length: written first, the body goes chunked.
    if (o.chunked && payload !== undefined) req.write(payload);
    req.end(o.chunked ? undefined : payload);
  });
}

/** Which operation (or the unrouted answers) a request reaches, by the document alone. */
interface Documented {
  name: string;
  responses: Record<string, OpenApiResponse>;
  pointer: string;
}

export class OpenApiChecker {
  readonly #schemas = new OpenApiSchemas();
  /** `operationId status` of every answer checked. */
  readonly seen = new Set<string>();

  /** What is wrong with the answer, one line each (empty when it is as documented). */
  errors(a: ApiAnswer): string[] {
    const doc = this.#documented(a.method, a.path.split('?')[0]!);
    let response = doc.responses[String(a.status)];
    let pointer = `${doc.pointer}/${a.status}`;
    if (!response) return [`${a.method} ${a.path}: status ${a.status} is not documented for ${doc.name} (${a.text.slice(0, 200)})`];
    this.seen.add(`${doc.name} ${a.status}`);
    if (response.$ref) {
      pointer = response.$ref.slice(1);
      response = this.#resolve(response.$ref);
    }
    const errors: string[] = [];
    for (const name of Object.keys(response.headers ?? {})) {
      if (a.headers[name.toLowerCase()] === undefined) errors.push(`${a.method} ${a.path} ${a.status}: header ${name} is missing`);
    }
    const json = response.content?.['application/json'];
    if (!json) {
      if (a.text !== '') errors.push(`${a.method} ${a.path} ${a.status}: a body where the document has none: ${a.text.slice(0, 200)}`);
      return errors;
    }
    if (!/^application\/json\b/.test(a.headers['content-type'] ?? '')) errors.push(`${a.method} ${a.path} ${a.status}: Content-Type ${a.headers['content-type']}`);
    let body: unknown;
    try {
      body = JSON.parse(a.text);
    } catch {
      return [...errors, `${a.method} ${a.path} ${a.status}: the body is not JSON: ${a.text.slice(0, 200)}`];
    }
    const validate = this.#schemas.at(`${pointer}/content/application~1json/schema`);
    if (!validate(body)) {
      const why = (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`);
      errors.push(`${a.method} ${a.path} ${a.status}: the body does not match the document: ${why.join('; ')}\n  ${a.text.slice(0, 500)}`);
    }
    return errors;
  }

  /** Throws listing what is wrong; returns the parsed body (undefined for none) for further checks. */
  check(a: ApiAnswer): unknown {
    const errors = this.errors(a);
    if (errors.length > 0) throw new Error(errors.join('\n'));
    return a.text === '' ? undefined : JSON.parse(a.text);
  }

  /** Every `operationId status` the document names, and the unrouted answers. */
  documented(): string[] {
    const all: string[] = [];
    for (const item of Object.values(this.#schemas.document.paths)) {
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (op) all.push(...Object.keys(op.responses).map((s) => `${op.operationId} ${s}`));
      }
    }
    all.push(...Object.keys(this.#schemas.document['x-postcopy-unrouted'].responses).map((s) => `unrouted ${s}`));
    return all.sort();
  }

  /** The documented answers no checked answer has shown yet. */
  missing(): string[] {
    return this.documented().filter((k) => !this.seen.has(k));
  }

  #documented(method: string, path: string): Documented {
    const doc = this.#schemas.document;
    for (const [template, item] of Object.entries(doc.paths)) {
      const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
      if (!pattern.test(path)) continue;
      const lower = method.toLowerCase() as (typeof HTTP_METHODS)[number];
      const op = HTTP_METHODS.includes(lower) ? item[lower] : undefined;
      if (op) return { name: op.operationId, responses: op.responses, pointer: `/paths/${pointerToken(template)}/${lower}/responses` };
      break;
    }
    return { name: 'unrouted', responses: doc['x-postcopy-unrouted'].responses, pointer: '/x-postcopy-unrouted/responses' };
  }

  #resolve(ref: string): OpenApiResponse {
    let node: unknown = this.#schemas.document;
    for (const token of ref.replace(/^#\//, '').split('/')) node = (node as Record<string, unknown>)[token.replace(/~1/g, '/').replace(/~0/g, '~')];
    if (!node) throw new Error(`schema/openapi.v1.json: ${ref} does not resolve`);
    return node as OpenApiResponse;
  }
}
