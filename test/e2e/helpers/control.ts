// The control API from a test, as a fleet manager calls it: JSON over HTTP/1.1 on the service's Unix socket. Every
// answer is held to schema/openapi.v1.json on the way (a route that answers otherwise than documented fails the test).
import type { JobStatus } from '../../../src/service/job-types.js';
import { apiRequest, OpenApiChecker } from '../../helpers/openapi-check.js';

export interface ApiAnswer<T = unknown> {
  status: number;
  body: T;
}

type ErrorBody = { error: { code: string; message: string } };

/** A service's jobs through its API, every answer checked against the document. */
export class ControlClient {
  readonly socketPath: string;
  readonly checker: OpenApiChecker;

  constructor(socketPath: string, checker = new OpenApiChecker()) {
    this.socketPath = socketPath;
    this.checker = checker;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<ApiAnswer<T>> {
    const answer = await apiRequest(this.socketPath, method, path, body);
    return { status: answer.status, body: this.checker.check(answer) as T };
  }

  async submit(role: 'source' | 'dest', id: string, options: Record<string, string | boolean>): Promise<JobStatus> {
    return this.#ok(await this.call<JobStatus>('POST', '/v1/jobs', { role, id, options }), 201, `submit ${id}`);
  }

  async job(id: string): Promise<JobStatus> {
    return this.#ok(await this.call<JobStatus>('GET', `/v1/jobs/${id}`), 200, `GET ${id}`);
  }

  async jobs(): Promise<JobStatus[]> {
    return this.#ok(await this.call<{ jobs: JobStatus[] }>('GET', '/v1/jobs'), 200, 'GET /v1/jobs').jobs;
  }

  abort(id: string): Promise<ApiAnswer<JobStatus & ErrorBody>> {
    return this.call('POST', `/v1/jobs/${id}/abort`);
  }

  async setSpeed(id: string, bytesPerSecond: number | null): Promise<JobStatus> {
    return this.#ok(await this.call<JobStatus>('POST', `/v1/jobs/${id}/speed`, { bytesPerSecond }), 200, `speed ${id}`);
  }

  #ok<T>(a: ApiAnswer<T>, status: number, what: string): T {
    if (a.status !== status) throw new Error(`${what}: ${a.status} ${JSON.stringify(a.body)}`);
    return a.body;
  }
}

