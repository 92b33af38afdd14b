// The pivot's QMP conversation against a scripted QEMU block layer (no QEMU): which disk it picks, what it sends,
// and that every failure puts things back (job cancelled, image node removed, the disk still on the export). The
// real QEMU runs it in test/qemu/qemu-migration.test.ts.
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NotOnExportError, pivotToLocal } from '../../src/hypervisor/qemu-pivot.js';
import { QmpClient } from '../../src/hypervisor/qmp-client.js';
import { closeFakeQmps, fakeQmp, reply, sendEvent, type QmpCommand } from './helpers/fake-qmp.js';

afterEach(closeFakeQmps);

const EXPORT_URI = 'nbd+unix:///disk?socket=%2Frun%2Fvm%201%2Fnbd.sock';
/** How QEMU 7.2 names that disk in query-block: the URI decoded. */
const QEMU_FILENAME = 'nbd+unix:///disk?socket=/run/vm 1/nbd.sock';

interface Disk {
  device: string;
  qdev: string;
  node: string;
  filename: string;
}

/** What the scripted QEMU does wrong, if anything. */
interface Faults {
  mirrorError?: string;
  neverReady?: boolean;
  completeError?: string;
}

/** A block layer with guest disks and the pivot's commands; records every command it was sent. */
async function scriptedQemu(
  disks: Disk[],
  faults: Faults = {},
  left: { node?: boolean; job?: boolean } = {},
): Promise<{ qmp: QmpClient; sent: QmpCommand[]; disks: Disk[]; nodes: Set<string> }> {
  const sent: QmpCommand[] = [];
  const nodes = new Set(disks.map((d) => d.node));
  if (left.node) nodes.add('postcopy-local');
  let job: { target: string; source: string; ready: boolean } | null = left.job ? { target: 'postcopy-local', source: disks[0]!.node, ready: true } : null;
  const on = (cmd: QmpCommand, sock: Socket) => {
    sent.push(cmd);
    const a = (cmd.arguments ?? {}) as Record<string, string>;
    switch (cmd.execute) {
      case 'query-block':
        return reply(
          sock,
          cmd.id,
          disks.map((d) => ({ device: d.device, qdev: d.qdev, inserted: { 'node-name': d.node, ro: false, cache: { writeback: true, direct: true, 'no-flush': false }, image: { filename: d.filename } } })),
        );
      case 'query-jobs':
        return reply(sock, cmd.id, job ? [{ id: 'postcopy-pivot', type: 'mirror', status: job.ready ? 'ready' : 'running' }] : []);
      case 'query-named-block-nodes':
        return reply(sock, cmd.id, [...nodes].map((n) => ({ 'node-name': n })));
      case 'blockdev-add':
        if (nodes.has(a['node-name']!)) return reply(sock, cmd.id, {}, `Duplicate nodes with node-name='${a['node-name']}'`);
        nodes.add(a['node-name']!);
        return reply(sock, cmd.id);
      case 'blockdev-mirror':
        if (faults.mirrorError) return reply(sock, cmd.id, {}, faults.mirrorError);
        job = { target: a.target!, source: a.device!, ready: false };
        // As QEMU does: a sync=none mirror is READY before its command's reply arrives.
        if (!faults.neverReady) sendEvent(sock, 'BLOCK_JOB_READY', { device: a['job-id'], type: 'mirror', len: 0, offset: 0, speed: 0 });
        return reply(sock, cmd.id);
      case 'job-complete': {
        reply(sock, cmd.id);
        if (faults.completeError) {
          job = null;
          return sendEvent(sock, 'BLOCK_JOB_COMPLETED', { device: a.id, type: 'mirror', error: faults.completeError });
        }
        const d = disks.find((x) => x.node === job!.source)!;
        nodes.delete(d.node);
        d.node = job!.target;
        d.filename = '/var/lib/images/vm1.img';
        job = null;
        return sendEvent(sock, 'BLOCK_JOB_COMPLETED', { device: a.id, type: 'mirror', len: 0, offset: 0 });
      }
      case 'job-cancel':
        if (!job) return reply(sock, cmd.id, {}, `Job '${a.id}' not found`);
        job = null;
        reply(sock, cmd.id);
        return sendEvent(sock, 'BLOCK_JOB_CANCELLED', { device: a.id, type: 'mirror' });
      case 'blockdev-del':
        if (disks.some((d) => d.node === a['node-name'])) return reply(sock, cmd.id, {}, `Node '${a['node-name']}' is busy`);
        nodes.delete(a['node-name']!);
        return reply(sock, cmd.id);
      default:
        return reply(sock, cmd.id, {}, `unexpected ${cmd.execute}`);
    }
  };
  const qmp = await QmpClient.connect(await fakeQmp(on));
  return { qmp, sent, disks, nodes };
}

const guestDisk = (over: Partial<Disk> = {}): Disk => ({ device: 'd0', qdev: '/machine/peripheral-anon/device[0]/virtio-backend', node: '#block159', filename: QEMU_FILENAME, ...over });
const localDisk: Disk = { device: 'd1', qdev: '', node: '#block300', filename: '/var/lib/images/scratch.img' };
/** The commands every attempt starts with: the disks, then what an earlier attempt may have left. */
const LOOK = ['query-block', 'query-jobs', 'query-named-block-nodes'];
const pivot = (qmp: QmpClient, extra = {}) => pivotToLocal(qmp, { exportUri: EXPORT_URI, imagePath: '/var/lib/images/vm1.img', log: silentLogger(), ...extra });

describe('pivot to the local image (scripted QEMU)', () => {
  it('picks the disk on the export (URI encoded differently), mirrors sync=none write-blocking into the image, completes; the disk is on the image', async () => {
    const q = await scriptedQemu([localDisk, guestDisk()]);
    const done = await pivot(q.qmp);
    expect(done).toMatchObject({ device: 'd0', fromNode: '#block159', toNode: 'postcopy-local', file: '/var/lib/images/vm1.img' });
    expect(q.sent.map((c) => c.execute)).toEqual([...LOOK, 'blockdev-add', 'blockdev-mirror', 'job-complete', 'query-block']);
    // The image opened as the export's node was: raw over the file, same cache mode.
    expect(q.sent[3]!.arguments).toEqual({ driver: 'raw', 'node-name': 'postcopy-local', 'read-only': false, cache: { direct: true, 'no-flush': false }, file: { driver: 'file', filename: '/var/lib/images/vm1.img' } });
    expect(q.sent[4]!.arguments).toEqual({ 'job-id': 'postcopy-pivot', device: '#block159', target: 'postcopy-local', sync: 'none', 'copy-mode': 'write-blocking' });
    expect(q.disks[0]!.node).toBe('#block300');
    expect(q.disks[1]!.node).toBe('postcopy-local');
  });

  it('finds a -blockdev driver=nbd disk by the json: filename QEMU reports for it', async () => {
    const json = 'json:' + JSON.stringify({ driver: 'raw', file: { driver: 'nbd', export: 'disk', server: { type: 'unix', path: '/run/vm 1/nbd.sock' } } });
    const q = await scriptedQemu([guestDisk({ device: '', filename: json })]);
    const done = await pivot(q.qmp);
    expect(done.device).toBe('/machine/peripheral-anon/device[0]/virtio-backend');
  });

  it('no disk on the export (another socket, or a file): refused before anything is added', async () => {
    const q = await scriptedQemu([localDisk, guestDisk({ filename: 'nbd+unix:///disk?socket=/run/other.sock' })]);
    // Its own class: D then knows the guest does not depend on the export, and stops at SIGTERM as for any client.
    const err = (await pivot(q.qmp).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NotOnExportError);
    expect(err.message).toMatch(/no disk of the guest is on the export nbd\+unix:.* nothing to move/);
    expect(q.sent.map((c) => c.execute)).toEqual(['query-block']);
  });

  it('the mirror refused (the image locked by another process): the image node is removed, the disk is still on the export, a retry works', async () => {
    const q = await scriptedQemu([guestDisk()], { mirrorError: 'Failed to get shared "consistent read" lock' });
    await expect(pivot(q.qmp)).rejects.toThrow(/moving the guest disk to \/var\/lib\/images\/vm1\.img failed: QMP blockdev-mirror: Failed to get shared "consistent read" lock.*; d0 is still on the export$/);
    expect(q.sent.map((c) => c.execute)).toEqual([...LOOK, 'blockdev-add', 'blockdev-mirror', 'blockdev-del', 'query-block']);
    expect([...q.nodes]).toEqual(['#block159']);
  });

  it('a mirror that never becomes ready is cancelled (no pivot) and its node removed', async () => {
    const q = await scriptedQemu([guestDisk()], { neverReady: true });
    await expect(pivot(q.qmp, { readyTimeoutMs: 100 })).rejects.toThrow(/did not become ready within 100 ms; d0 is still on the export/);
    expect(q.sent.map((c) => c.execute)).toEqual([...LOOK, 'blockdev-add', 'blockdev-mirror', 'job-cancel', 'blockdev-del', 'query-block']);
    expect(q.disks[0]!.node).toBe('#block159');
  });

  it('a job that ends in error at completion: no cancel of a job that is gone, node removed, disk on the export', async () => {
    const q = await scriptedQemu([guestDisk()], { completeError: 'Input/output error' });
    await expect(pivot(q.qmp)).rejects.toThrow(/the pivot mirror failed: Input\/output error; d0 is still on the export/);
    expect(q.sent.map((c) => c.execute)).toEqual([...LOOK, 'blockdev-add', 'blockdev-mirror', 'job-complete', 'blockdev-del', 'query-block']);
  });

  it('an earlier attempt whose swap landed late: the disk is on the image already, reported moved, nothing sent', async () => {
    const q = await scriptedQemu([guestDisk({ node: 'postcopy-local', filename: '/var/lib/images/vm1.img' })]);
    const done = await pivot(q.qmp);
    expect(done).toMatchObject({ device: 'd0', fromNode: null, toNode: 'postcopy-local' });
    expect(q.sent.map((c) => c.execute)).toEqual(['query-block']);
  });

  it("an earlier attempt's leftovers (its mirror still running, its image node) are cleared first, then the move runs", async () => {
    const q = await scriptedQemu([guestDisk()], {}, { node: true, job: true });
    await pivot(q.qmp);
    expect(q.sent.map((c) => c.execute)).toEqual([...LOOK.slice(0, 2), 'job-cancel', 'query-named-block-nodes', 'blockdev-del', 'blockdev-add', 'blockdev-mirror', 'job-complete', 'query-block']);
    expect(q.disks[0]!.node).toBe('postcopy-local');
  });
});
