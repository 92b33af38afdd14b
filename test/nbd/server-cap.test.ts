// The NBD server's connection cap (issue 10, case 5): idle and abandoned clients cannot lock a live client
// out. Clients still negotiating go first (oldest first), then transmission clients idle the longest with
// nothing in flight; only when every slot is busy is a new client turned away. Real sockets, real nbdinfo.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NbdServer } from '../../src/nbd/server.js';
import * as C from '../../src/nbd/constants.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { RawPeer } from './helpers/raw-peer.js';
import { assertTools, run, skipWithout } from './helpers/tools.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const CAP = 8;

/** A client that connected and then said nothing (or vanished without a FIN): a half-open slot. */
function silent(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(s));
    s.resume(); // reads (and drops) the greeting, so the server's hang-up is noticed
    s.on('error', () => undefined);
    s.once('error', reject);
  });
}


describe.skipIf(skipWithout(['nbdinfo']))('NBD connection cap', () => {
  let disk: MemoryBlockDevice;
  let server: NbdServer;
  let port: number;
  const opened: Array<{ destroy(): void }> = [];

  beforeAll(async () => {
    assertTools(['nbdinfo']);
    disk = new MemoryBlockDevice(MiB).fillPattern();
    server = new NbdServer({ exports: [{ name: 'disk', device: disk }], logger: silentLogger(), maxConnections: CAP });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
  });

  afterAll(async () => {
    for (const o of opened) o.destroy();
    await server?.close();
  });

  /** Earlier clients gone, then every slot taken by a client that entered transmission. */
  async function fillWithTransmissionClients(): Promise<RawPeer[]> {
    for (const o of opened.splice(0)) o.destroy();
    await waitUntil(() => server.connectionCount === 0, 'the earlier clients to leave');
    const peers: RawPeer[] = [];
    for (let i = 0; i < CAP; i++) {
      const p = await RawPeer.connect(port);
      await p.enter();
      peers.push(p);
      opened.push(p);
    }
    return peers;
  }

  it('filled with half-open and idle clients, a real client still gets in; negotiating ones go first', async () => {
    const idle: RawPeer[] = [];
    for (let i = 0; i < CAP / 2; i++) {
      const p = await RawPeer.connect(port);
      await p.enter();
      idle.push(p);
      opened.push(p);
    }
    const halfOpen: net.Socket[] = [];
    for (let i = 0; i < CAP / 2; i++) {
      const s = await silent(port);
      halfOpen.push(s);
      opened.push(s);
    }
    await waitUntil(() => server.connectionCount === CAP, 'the cap to fill');
    const closed = new Set<net.Socket>();
    halfOpen.forEach((s) => s.once('close', () => closed.add(s)));

    const r = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`], 15_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(MiB));
    // The oldest half-open client made room; the idle transmission clients were not touched.
    await waitUntil(() => closed.has(halfOpen[0]!), 'the oldest half-open client to be cut');
    expect(closed.size).toBe(1);
    expect(idle.every((p) => !p.isClosed)).toBe(true);
    expect(server.connectionCount).toBeLessThanOrEqual(CAP);
  });

  it('with only transmission clients, the one idle the longest is evicted; a client with a request in flight is not', async () => {
    const peers = await fillWithTransmissionClients();
    // peers[0] is the oldest, but it just did a read: the longest idle is now peers[1]. peers[2] is busy.
    peers[0]!.request(C.NBD_CMD_READ, 1n, 0, 512);
    expect((await peers[0]!.reply(1n)).error).toBe(0);
    disk.delayMs = 3000;
    const reads = disk.counts.read ?? 0;
    peers[2]!.request(C.NBD_CMD_READ, 2n, 0, 512);
    await waitUntil(() => (disk.counts.read ?? 0) > reads, 'the read to reach the device');
    const r = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`], 15_000);
    disk.delayMs = 0;
    expect(r.code, r.stderr).toBe(0);
    await waitUntil(() => peers[1]!.isClosed, 'the longest-idle client to be evicted');
    expect(peers[0]!.isClosed).toBe(false);
    expect((await peers[2]!.reply(2n)).error).toBe(0);
  });

  it('when every slot has a request in flight the new client is turned away, and nobody is evicted', async () => {
    const peers = await fillWithTransmissionClients();
    disk.delayMs = 2000;
    const reads = disk.counts.read ?? 0;
    peers.forEach((p, i) => p.request(C.NBD_CMD_READ, BigInt(100 + i), 0, 512));
    await waitUntil(() => (disk.counts.read ?? 0) === reads + CAP, 'every read to reach the device');
    const r = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`], 15_000);
    expect(r.code).not.toBe(0);
    disk.delayMs = 0;
    for (const [i, p] of peers.entries()) expect((await p.reply(BigInt(100 + i))).error).toBe(0);
    expect(peers.every((p) => !p.isClosed)).toBe(true);
  });
});
