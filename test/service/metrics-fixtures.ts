// Test inputs for the metrics tests: a JobStatus with every field filled, and the Prometheus text format read back
// into samples (a reader of our own, so a test never checks the exposition with the code that wrote it).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JobStatus } from '../../src/service/job-types.js';
import { jobStatus as fullStatus } from '../helpers/fake-job-service.js';

/** A running dest job's status with every field filled (the fake service's builder), `over` on top. */
export function jobStatus(over: Partial<JobStatus> & Pick<JobStatus, 'id'>): JobStatus {
  return fullStatus(over.id, over.role ?? 'dest', {
    state: 'running',
    phase: 'postcopy',
    createdAt: '2026-01-01T00:00:00.000Z',
    dataTotalBytes: 0,
    dataProcessedBytes: 0,
    dataRemainingBytes: 0,
    bytesOnlyOnSource: 0,
    maxDowntimeMs: null,
    ...over,
  });
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line of a text exposition (version 0.0.4); comment lines skipped. */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
export function pick(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The one sample named `name` with `labels` (throws when there is none or several). */
export function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = pick(samples, name, labels);
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate it signed, plus a stranger CA's client: PEM files in dir. */
export function makeTestPki(dir: string): { file: (name: string) => string } {
  const file = (name: string) => join(dir, name);
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const ca = (name: string) => openssl(['req', '-x509', ...key, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`]);
  const leaf = (name: string, caName: string, ext: string) => {
    writeFileSync(file(`${name}.ext`), ext);
    openssl(['req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`]);
  };
  ca('ca');
  ca('otherca');
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'otherca', 'extendedKeyUsage=clientAuth\n');
  return { file };
}
