// NBD TLS on our server (issue 10, case 5): STARTTLS with x509 certificates as qemu-nbd's --tls-creds,
// mandatory once configured. Real clients with their own TLS options: qemu-img, qemu-io, nbdinfo; a plain
// client is refused, and with a CA configured so is a client whose certificate that CA did not sign.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { NbdServer } from '../../src/nbd/server.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { makePki, qemuTls, type Pki } from './helpers/pki.js';
import { RawPeer } from './helpers/raw-peer.js';
import { assertTools, run, skipWithout, tempDir } from './helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'nbdinfo', 'openssl'];
const MiB = 1024 * 1024;

describe.skipIf(skipWithout(TOOLS))('NBD over TLS (STARTTLS, x509) with real clients', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let pki: Pki;
  let disk: MemoryBlockDevice;
  let server: NbdServer;
  /** Client certificates required (a CA given). */
  let port: number;
  /** Server certificate only (no CA: any client that completes TLS may connect). */
  let openPort: number;

  beforeAll(async () => {
    assertTools(TOOLS);
    tmp = await tempDir();
    pki = makePki(tmp.dir);
    disk = new MemoryBlockDevice(4 * MiB).fillPattern(0, MiB);
    server = new NbdServer({ exports: [{ name: 'disk', device: disk }], logger: silentLogger() });
    const f = (n: string): Buffer => readFileSync(`${pki.serverDir}/${n}`);
    const creds = { cert: f('server-cert.pem'), key: f('server-key.pem') };
    port = ((await server.listen({ port: 0, tls: { ...creds, ca: f('ca-cert.pem') } })) as AddressInfo).port;
    openPort = ((await server.listen({ port: 0, tls: creds })) as AddressInfo).port;
  });

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('qemu-img info and qemu-io (write, read back, flush) work over TLS with a client certificate', async () => {
    const info = await run('qemu-img', ['info', '--output=json', ...qemuTls(pki.clientDir, port)]);
    expect(info.code, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(4 * MiB);
    const io = await run('qemu-io', [...qemuTls(pki.clientDir, port), '-c', 'write -P 0x5a 1M 64k', '-c', 'read -P 0x5a 1M 64k', '-c', 'flush']);
    expect(io.code, io.stdout + io.stderr).toBe(0);
    expect(io.stdout + io.stderr).not.toMatch(/fail|error|mismatch/i);
    expect(disk.data.subarray(MiB, MiB + 64 * 1024).every((b) => b === 0x5a)).toBe(true);
  });

  it('nbdinfo with an nbds:// URI and tls-certificates= works', async () => {
    const r = await run('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/disk?tls-certificates=${pki.clientDir}`]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { exports: Array<{ 'export-size': number }> };
    expect(info.exports[0]!['export-size']).toBe(4 * MiB);
  });

  it('a plain client (no TLS) is refused: nbdinfo, qemu-img, and EXPORT_NAME closes', async () => {
    // libnbd reports TLS_REQD on GO as 'Operation not supported'.
    const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
    expect(info.code).not.toBe(0);
    expect(info.stdout).toBe('');
    const q = await run('qemu-img', ['info', '-f', 'raw', `nbd://127.0.0.1:${port}/disk`]);
    expect(q.code).not.toBe(0);
    expect(q.stderr).toMatch(/TLS/i);
    const p = await RawPeer.connect(port);
    await p.hello();
    for (const opt of [C.NBD_OPT_LIST, C.NBD_OPT_STRUCTURED_REPLY]) {
      p.send(codec.encodeOption(opt));
      const r = await p.optionReplies();
      expect(r.map((x) => x.replyType)).toEqual([C.NBD_REP_ERR_TLS_REQD]);
    }
    p.send(codec.encodeInfoRequest(C.NBD_OPT_GO, 'disk', []));
    expect((await p.optionReplies()).map((x) => x.replyType)).toEqual([C.NBD_REP_ERR_TLS_REQD]);
    p.send(codec.encodeOption(C.NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
    expect(await p.waitClosed()).toBe(true);
  });

  it('with a CA configured, a client whose certificate another CA signed, or with none, is refused', async () => {
    const stranger = await run('nbdinfo', [`nbds://127.0.0.1:${port}/disk?tls-certificates=${pki.strangerDir}`]);
    expect(stranger.code).not.toBe(0);
    const anonymous = await run('qemu-img', ['info', ...qemuTls(pki.anonymousDir, port)]);
    expect(anonymous.code).not.toBe(0);
    // The same anonymous client is let in where no CA is configured (server certificate only).
    const open = await run('qemu-img', ['info', '--output=json', ...qemuTls(pki.anonymousDir, openPort)]);
    expect(open.code, open.stderr).toBe(0);
  });

  it('STARTTLS twice is INVALID; state negotiated before TLS is forgotten; a failed handshake ends the session', async () => {
    const p = await RawPeer.connect(openPort);
    await p.hello();
    p.send(codec.encodeOption(C.NBD_OPT_STARTTLS));
    expect((await p.optionReplies()).map((x) => x.replyType)).toEqual([C.NBD_REP_ACK]);
    // A client that is not speaking TLS now: garbage instead of a ClientHello ends the connection.
    p.send(Buffer.from('this is not a TLS ClientHello'));
    expect(await p.waitClosed()).toBe(true);

    const secure = await startTls(openPort, `${pki.serverDir}/ca-cert.pem`);
    secure.write(codec.encodeOption(C.NBD_OPT_STARTTLS));
    const reply = await readExactly(secure, C.OPTION_REPLY_HEADER_SIZE);
    expect(reply.readUInt32BE(12) >>> 0).toBe(C.NBD_REP_ERR_INVALID);
    secure.destroy();
  });
});

/** Greeting, client flags, STARTTLS, then the TLS handshake: a TLS socket in the option phase. */
async function startTls(port: number, caFile: string): Promise<tls.TLSSocket> {
  const p = await RawPeer.connect(port);
  await p.hello();
  p.send(codec.encodeOption(C.NBD_OPT_STARTTLS));
  const r = await p.optionReplies();
  expect(r.map((x) => x.replyType)).toEqual([C.NBD_REP_ACK]);
  p.socket.removeAllListeners('data');
  return new Promise((resolve, reject) => {
    const s = tls.connect({ socket: p.socket, ca: readFileSync(caFile), servername: 'localhost' }, () => resolve(s));
    s.once('error', reject);
  });
}

function readExactly(s: tls.TLSSocket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        s.off('data', onData);
        resolve(buf.subarray(0, n));
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed')));
  });
}
