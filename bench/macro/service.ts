// The bulk migration as jobs between two already-running host services (S's and D's `postcopy serve` on loopback),
// the fair match for nbdcopy from an already-running nbdkit: neither pays a process start-up inside the run. Timed
// from the submit of the dest job to both jobs completed, polled through the control API.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callApi } from '../../src/cli/control-client.js';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import type { JobStatus } from '../../src/service/job-types.js';
import { freePort, processCpuSec, Server, start, waitConnectable } from '../lib/proc.js';

/** The CLI built with the bench: the same sources as the standalone agents measured beside it. */
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
/** How often a run asks whether its jobs are done: well under the run's own spread. */
const POLL_MS = 5;

export interface ServiceRun {
  wallMs: number;
  /** CPU seconds of S's service and D's service during the run. */
  sourceCpuSec: number;
  destCpuSec: number;
  ok: boolean;
  error?: string;
}

export class ServicePair {
  readonly #dir: string;
  readonly #source: Server;
  readonly #dest: Server;
  readonly #destPort: number;
  #runs = 0;

  private constructor(dir: string, source: Server, dest: Server, destPort: number) {
    this.#dir = dir;
    this.#source = source;
    this.#dest = dest;
    this.#destPort = destPort;
  }

  /** Both services started and answering on their control sockets. */
  static async start(dir: string): Promise<ServicePair> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const [sPort, dPort] = await Promise.all([freePort(), freePort()]);
    const serve = (name: string, port: number) =>
      new Server(`postcopy serve (${name})`, start(process.execPath, [...AGENT_NODE_FLAGS, MAIN, 'serve', '--root', join(dir, `${name}-root`), '--listen', `127.0.0.1:${port}`, '--control', join(dir, `${name}.sock`), '--log-level', 'warn'], { log: join(dir, `${name}-serve.log`) }));
    const pair = new ServicePair(dir, serve('source', sPort), serve('dest', dPort), dPort);
    await Promise.all([waitConnectable({ path: join(dir, 'source.sock') }), waitConnectable({ path: join(dir, 'dest.sock') })]);
    return pair;
  }

  /** One migration of `image` into `out` (which must not exist) as a dest job and a source job; both records removed after. */
  async migrate(image: string, out: string): Promise<ServiceRun> {
    const id = `bench-${++this.#runs}`;
    const ticket = join(this.#dir, `${id}.ticket`);
    writeFileSync(ticket, randomBytes(24).toString('hex') + '\n', { mode: 0o600 });
    const src = join(this.#dir, 'source.sock');
    const dst = join(this.#dir, 'dest.sock');
    const cpu0 = { s: processCpuSec(this.#source.pid), d: processCpuSec(this.#dest.pid) };
    const t0 = performance.now();
    let error: string | undefined;
    try {
      await submit(dst, { role: 'dest', id, options: { image: out, 'ticket-file': ticket } });
      await submit(src, { role: 'source', id, options: { connect: `127.0.0.1:${this.#destPort}`, image, 'ticket-file': ticket } });
      const [d, s] = await Promise.all([finished(dst, id), finished(src, id)]);
      if (d.state !== 'completed' || s.state !== 'completed') error = `dest ${d.state} ${JSON.stringify(d.error)}, source ${s.state} ${JSON.stringify(s.error)}`;
    } catch (e) {
      error = (e as Error).message;
    }
    const wallMs = performance.now() - t0;
    const run: ServiceRun = { wallMs, sourceCpuSec: processCpuSec(this.#source.pid) - cpu0.s, destCpuSec: processCpuSec(this.#dest.pid) - cpu0.d, ok: error === undefined, ...(error ? { error } : {}) };
    await Promise.all([callApi(dst, 'DELETE', `/v1/jobs/${id}`), callApi(src, 'DELETE', `/v1/jobs/${id}`)]);
    return run;
  }

  async stop(): Promise<void> {
    await Promise.all([this.#source.stop(), this.#dest.stop()]);
  }
}

async function submit(socket: string, body: unknown): Promise<void> {
  const r = await callApi(socket, 'POST', '/v1/jobs', body);
  if (r.kind !== 'reply' || r.status !== 201) throw new Error(`submit: ${r.kind === 'reply' ? `${r.status} ${JSON.stringify(r.body)}` : r.line}`);
}

async function finished(socket: string, id: string): Promise<JobStatus> {
  for (;;) {
    const r = await callApi(socket, 'GET', `/v1/jobs/${id}`);
    if (r.kind !== 'reply' || r.status !== 200) throw new Error(`status of ${id}: ${r.kind === 'reply' ? r.status : r.line}`);
    const job = r.body as JobStatus;
    if (job.state === 'completed' || job.state === 'failed' || job.state === 'aborted') return job;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
