// Test certificates made with openssl at test time, in the layout qemu's tls-creds-x509 and libnbd's
// tls-certificates want: a directory per party holding ca-cert.pem and its own <role>-cert.pem / -key.pem.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface Pki {
  /** Server side: ca-cert.pem, server-cert.pem (SAN IP:127.0.0.1, localhost), server-key.pem. */
  serverDir: string;
  /** A client our CA signed: ca-cert.pem, client-cert.pem, client-key.pem. */
  clientDir: string;
  /** A client another CA signed (it trusts our CA, so only the server can refuse it). */
  strangerDir: string;
  /** A client with no certificate of its own: ca-cert.pem only. */
  anonymousDir: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'ignore' });
}

export function makePki(root: string): Pki {
  const work = path.join(root, 'pki-work');
  mkdirSync(work, { recursive: true });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const ca = (name: string): void => openssl(['req', '-x509', ...key, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`], work);
  const leaf = (name: string, caName: string, ext: string): void => {
    writeFileSync(path.join(work, `${name}.ext`), ext);
    openssl(['req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], work);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], work);
  };
  ca('ca');
  ca('otherca');
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'otherca', 'extendedKeyUsage=clientAuth\n');
  const dir = (name: string, files: Array<[string, string]>): string => {
    const d = path.join(root, name);
    mkdirSync(d, { recursive: true });
    copyFileSync(path.join(work, 'ca.crt'), path.join(d, 'ca-cert.pem'));
    for (const [from, to] of files) copyFileSync(path.join(work, from), path.join(d, to));
    return d;
  };
  return {
    serverDir: dir('server', [['server.crt', 'server-cert.pem'], ['server.key', 'server-key.pem']]),
    clientDir: dir('client', [['client.crt', 'client-cert.pem'], ['client.key', 'client-key.pem']]),
    strangerDir: dir('stranger', [['stranger.crt', 'client-cert.pem'], ['stranger.key', 'client-key.pem']]),
    anonymousDir: dir('anonymous', []),
  };
}

/** qemu-img/qemu-io arguments for export 'disk' at 127.0.0.1:port over TLS with the x509 directory dir. */
export function qemuTls(dir: string, port: number): string[] {
  return ['--object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`, '--image-opts', `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${port},file.export=disk,file.tls-creds=tls0`];
}
