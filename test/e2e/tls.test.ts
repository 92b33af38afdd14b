// Mutual TLS on the migration socket between two real processes: certificates made with openssl at test time.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'ignore' });
}

/** A CA and two leaf certificates signed by it (D's for 127.0.0.1, S's as a client), plus a stranger CA's. */
function makePki(dir: string): void {
  const ca = (name: string) => openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`], dir);
  const leaf = (name: string, caName: string) => {
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
  };
  execFileSync('sh', ['-c', "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > dest.ext; printf 'extendedKeyUsage=clientAuth\\n' > source.ext; cp source.ext stranger.ext"], { cwd: dir });
  ca('ca');
  ca('otherca');
  leaf('dest', 'ca');
  leaf('source', 'ca');
  leaf('stranger', 'otherca');
}

describe('mutual TLS on the migration socket', () => {
  it('migrates over TLS; a source whose certificate another CA signed is refused before anything starts', async () => {
    const w = workDir('tls');
    teardown.later(w.cleanup);
    makePki(w.dir);
    const f = (n: string) => join(w.dir, n);
    const src = f('src.img');
    const dst = f('dst.img');
    generateDemoImage(src, 16 * 1024 * 1024, 4);
    const port = await freePort();
    const dEvents = f('d.jsonl');
    const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', w.ticket, '--events', dEvents, '--tls-cert', f('dest.crt'), '--tls-key', f('dest.key'), '--tls-ca', f('ca.crt')]);
    teardown.agent(dest);
    await waitForEvent(dEvents, (e) => e.event === 'listening');

    const stranger = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket, '--connect-timeout', '2', '--tls-cert', f('stranger.crt'), '--tls-key', f('stranger.key'), '--tls-ca', f('ca.crt')]);
    teardown.agent(stranger);
    expect((await stranger.exit).code).toBe(4);
    await waitForEvent(dEvents, (e) => e.event === 'refused' && e.code === 'TLS');

    const plain = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket, '--connect-timeout', '2']);
    teardown.agent(plain);
    expect((await plain.exit).code).toBe(4);

    const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket, '--tls-cert', f('source.crt'), '--tls-key', f('source.key'), '--tls-ca', f('ca.crt')]);
    teardown.agent(source);
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(s.code, source.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    expect((await compareImages(src, dst)).ok).toBe(true);
    expect(readEvents(dEvents).some((e) => e.event === 'phase' && e.phase === 'confirmed')).toBe(true);
  });
});
