// The control API's routes, read from the OpenAPI document: each operation (by operationId) is answered by one
// call of the JobService. A route or an operation the document has and this table lacks fails at start-up.
import type { ValidateFunction } from 'ajv/dist/2020.js';
import { type JobService, type SubmitRequest } from './job-types.js';
import { HTTP_METHODS, pointerToken } from './openapi-document.js';
import type { OpenApiSchemas } from './openapi.js';

/** What a handler answers: a status and a JSON body (none for 204), and headers beyond Content-Type. */
export interface Answer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

type Handler = (service: JobService, id: string, body: unknown) => Answer | Promise<Answer>;

const jobUrl = (id: string): string => `/v1/jobs/${encodeURIComponent(id)}`;

/** Each operation of the document, answered. The body has passed the document's schema by the time it is called. */
const HANDLERS: Record<string, Handler> = {
  submitJob: async (s, _id, body) => {
    const job = await s.submit(body as SubmitRequest);
    return { status: 201, body: job, headers: { Location: jobUrl(job.id) } };
  },
  listJobs: (s) => ({ status: 200, body: { jobs: s.list() } }),
  getJob: (s, id) => ({ status: 200, body: s.get(id) }),
  removeJob: async (s, id) => {
    await s.remove(id);
    return { status: 204 };
  },
  abortJob: async (s, id) => ({ status: 200, body: await s.abort(id) }),
  setJobSpeed: (s, id, body) => ({ status: 200, body: s.setSpeed(id, (body as { bytesPerSecond: number | null }).bytesPerSecond) }),
  setJobMaxDowntime: async (s, id, body) => ({ status: 200, body: await s.setMaxDowntime(id, (body as { ms: number }).ms) }),
};

export interface Operation {
  operationId: string;
  handler: Handler;
  /** The request body's schema; null when the operation takes none (a body sent anyway is not read). */
  body: ValidateFunction | null;
}

/** A request's place in the table: an operation (with the path's job id, if any), or why there is none. */
export type RouteMatch =
  | { kind: 'operation'; operation: Operation; id: string }
  | { kind: 'no-such-job'; id: string }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'no-route' };

interface Route {
  pattern: RegExp;
  /** By upper-case method. */
  operations: Map<string, Operation>;
}

export class ControlRoutes {
  readonly #routes: Route[] = [];
  readonly #validId: ValidateFunction;

  constructor(schemas: OpenApiSchemas) {
    this.#validId = schemas.named('JobId');
    const seen = new Set<string>();
    for (const [template, item] of Object.entries(schemas.document.paths)) {
      const operations = new Map<string, Operation>();
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (!op) continue;
        const handler = HANDLERS[op.operationId];
        if (!handler) throw new Error(`control API: no handler for operation ${op.operationId} (${method.toUpperCase()} ${template})`);
        seen.add(op.operationId);
        const bodyPointer = `/paths/${pointerToken(template)}/${method}/requestBody/content/application~1json/schema`;
        operations.set(method.toUpperCase(), { operationId: op.operationId, handler, body: op.requestBody ? schemas.at(bodyPointer) : null });
      }
      this.#routes.push({ pattern: templatePattern(template), operations });
    }
    const unused = Object.keys(HANDLERS).filter((k) => !seen.has(k));
    if (unused.length > 0) throw new Error(`control API: handlers for operations the document lacks: ${unused.join(', ')}`);
  }

  match(method: string, pathname: string): RouteMatch {
    for (const route of this.#routes) {
      const m = route.pattern.exec(pathname);
      if (!m) continue;
      const operation = route.operations.get(method);
      if (!operation) return { kind: 'method-not-allowed', allow: [...route.operations.keys()] };
      const id = m[1] === undefined ? '' : decodeSegment(m[1]);
      // An id that could never have been given names no job: 404 without asking the service.
      if (m[1] !== undefined && !this.#validId(id)) return { kind: 'no-such-job', id };
      return { kind: 'operation', operation, id };
    }
    return { kind: 'no-route' };
  }
}

/** `/v1/jobs/{id}/abort` → /^\/v1\/jobs\/([^/]+)\/abort$/ (one parameter at most: the job id). */
function templatePattern(template: string): RegExp {
  const parts = template.split(/\{[^}]+\}/);
  if (parts.length > 2) throw new Error(`control API: ${template} has more than one path parameter`);
  const escaped = parts.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${escaped.join('([^/]+)')}$`);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment; // malformed %-escapes: not a valid id either, so it is a 404
  }
}

