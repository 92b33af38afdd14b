// D's --nbd-* options (issue 10, case 5), checked at start: which listen addresses need TLS or --nbd-insecure,
// TLS files loaded and matched, socket mode and path, options that make no sense without an export.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExportOptions } from '../../src/cli/nbd-export.js';
import { makePki, type Pki } from './helpers/pki.js';
import { tempDir } from './helpers/tools.js';

type Values = Record<string, string | boolean | undefined>;

describe('parseExportOptions', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let pki: Pki;
  const creds = (): Values => ({
    'nbd-tls-cert': path.join(pki.serverDir, 'server-cert.pem'),
    'nbd-tls-key': path.join(pki.serverDir, 'server-key.pem'),
  });
  const refused = (v: Values, msg: RegExp) => expect(parseExportOptions(v)).rejects.toMatchObject({ code: 'PC_ERR_USAGE', message: expect.stringMatching(msg) });

  beforeAll(async () => {
    tmp = await tempDir();
    pki = makePki(tmp.dir);
  });
  afterAll(() => tmp.cleanup());

  it('no export: undefined; export options without one are refused', async () => {
    expect(await parseExportOptions({})).toBeUndefined();
    await refused({ 'nbd-read-only': true }, /--nbd-read-only needs an export/);
    await refused({ 'nbd-insecure': true, 'nbd-socket-mode': '0600' }, /--nbd-insecure, --nbd-socket-mode need an export/);
  });

  it('loopback listen addresses need nothing more', async () => {
    for (const l of ['127.0.0.1:0', '127.1.2.3:0', '[::1]:0', 'localhost:0', '[::ffff:127.0.0.1]:0']) {
      const c = await parseExportOptions({ 'nbd-listen': l });
      expect(c?.tls, l).toBeUndefined();
      expect(c?.readOnly).toBe(false);
    }
  });

  it('a non-loopback address needs TLS or --nbd-insecure, never both', async () => {
    for (const l of ['192.0.2.7:0', '[2001:db8::1]:0']) await refused({ 'nbd-listen': l }, /reachable from other hosts/);
    for (const l of ['0.0.0.0:0', '[::]:0']) {
      await refused({ 'nbd-listen': l }, /reachable from other hosts/);
      expect((await parseExportOptions({ 'nbd-listen': l, 'nbd-insecure': true }))?.tcp?.host).toBe(l.replace(/^\[?([^\]]*)\]?:0$/, '$1'));
      expect((await parseExportOptions({ 'nbd-listen': l, ...creds() }))?.tls?.ca).toBeUndefined();
    }
    await refused({ 'nbd-listen': '0.0.0.0:0', 'nbd-insecure': true, ...creds() }, /contradict/);
    await refused({ 'nbd-listen': 'no-such-host.invalid:1' }, /cannot resolve/);
  });

  it('TLS files: cert and key together, CA optional, mismatched or unreadable refused, TCP only', async () => {
    const ca = path.join(pki.serverDir, 'ca-cert.pem');
    const c = await parseExportOptions({ 'nbd-listen': '127.0.0.1:0', ...creds(), 'nbd-tls-ca': ca });
    expect(c?.tls?.ca?.equals(readFileSync(ca))).toBe(true);
    await refused({ 'nbd-listen': '127.0.0.1:0', 'nbd-tls-cert': creds()['nbd-tls-cert'] as string }, /go together/);
    await refused({ 'nbd-listen': '127.0.0.1:0', 'nbd-tls-ca': ca }, /go together/);
    await refused({ 'nbd-listen': '127.0.0.1:0', ...creds(), 'nbd-tls-key': path.join(pki.clientDir, 'client-key.pem') }, /unusable/);
    await refused({ 'nbd-listen': '127.0.0.1:0', ...creds(), 'nbd-tls-ca': path.join(tmp.dir, 'missing.pem') }, /cannot read --nbd-tls-ca/);
    await refused({ 'nbd-socket': path.join(tmp.dir, 's.sock'), ...creds() }, /secure the TCP export/);
  });

  it('socket: mode parsed as octal (default 0600); a file that is not a socket, or a missing directory, refused', async () => {
    const sock = path.join(tmp.dir, 'x.sock');
    expect((await parseExportOptions({ 'nbd-socket': sock }))?.socketMode).toBe(0o600);
    expect((await parseExportOptions({ 'nbd-socket': sock, 'nbd-socket-mode': '660' }))?.socketMode).toBe(0o660);
    for (const m of ['999', '0o600', 'rw', '07777']) await refused({ 'nbd-socket': sock, 'nbd-socket-mode': m }, /octal mode/);
    await refused({ 'nbd-listen': '127.0.0.1:0', 'nbd-socket-mode': '0600' }, /goes with --nbd-socket/);
    const file = path.join(tmp.dir, 'file');
    writeFileSync(file, 'x');
    await refused({ 'nbd-socket': file }, /is not a socket/);
    await refused({ 'nbd-socket': path.join(tmp.dir, 'nope', 's.sock') }, /does not exist/);
    // The one check dest-command relies on: sun_path's limit too, not only what is at the path.
    await refused({ 'nbd-socket': path.join(tmp.dir, 's'.repeat(120)) }, /longer than a Unix socket path/);
  });

  it('the export on the migration port is found at start (the port itself is held by dest-command: test/e2e/operator-mistakes)', async () => {
    await refused({ listen: '0.0.0.0:10809', 'nbd-listen': '127.0.0.1:10809' }, /same port/);
  });

  it('--nbd-read-only and --nbd-max-connections', async () => {
    const c = await parseExportOptions({ 'nbd-listen': '127.0.0.1:0', 'nbd-read-only': true, 'nbd-max-connections': '4' });
    expect(c).toMatchObject({ readOnly: true, maxConnections: 4 });
    await refused({ 'nbd-listen': '127.0.0.1:0', 'nbd-max-connections': '0' }, /--nbd-max-connections/);
  });
});
