// The control API from a test: JSON over HTTP/1.1 on the service's Unix socket, as any fleet manager would call it.
import { request } from 'node:http';
import type { JobStatus } from '../../../src/service/job-types.js';

export interface ApiAnswer<T = unknown> {
  status: number;
  body: T;
}

export function callApi<T = unknown>(socketPath: string, method: string, path: string, body?: unknown): Promise<ApiAnswer<T>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request({ socketPath, method, path, headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        try {
          resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : null) as T });
        } catch (e) {
          reject(new Error(`${method} ${path}: not JSON (${res.statusCode}): ${text.slice(0, 200)}`, { cause: e }));
        }
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A service's jobs through its API. */
export class ControlClient {
  readonly socketPath: string;
  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  async submit(role: 'source' | 'dest', id: string, options: Record<string, string | boolean>): Promise<JobStatus> {
    const r = await callApi<JobStatus>(this.socketPath, 'POST', '/v1/jobs', { role, id, options });
    if (r.status !== 201) throw new Error(`submit ${id}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async job(id: string): Promise<JobStatus> {
    const r = await callApi<JobStatus>(this.socketPath, 'GET', `/v1/jobs/${id}`);
    if (r.status !== 200) throw new Error(`GET ${id}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async jobs(): Promise<JobStatus[]> {
    const r = await callApi<{ jobs: JobStatus[] }>(this.socketPath, 'GET', '/v1/jobs');
    if (r.status !== 200) throw new Error(`GET /v1/jobs: ${r.status}`);
    return r.body.jobs;
  }

  abort(id: string): Promise<ApiAnswer<JobStatus & { error: { code: string; message: string } }>> {
    return callApi(this.socketPath, 'POST', `/v1/jobs/${id}/abort`);
  }

  async setSpeed(id: string, bytesPerSecond: number | null): Promise<JobStatus> {
    const r = await callApi<JobStatus>(this.socketPath, 'POST', `/v1/jobs/${id}/speed`, { bytesPerSecond });
    if (r.status !== 200) throw new Error(`speed ${id}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
}
