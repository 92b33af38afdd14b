// Property: random concurrent operations from our client through a proxy that re-cuts the stream
// at random points reach our server and leave the disk exactly as a plain Buffer model says;
// block status never calls non-zero data zero.
import fc from 'fast-check';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NbdClient } from '../../src/nbd/client.js';
import * as C from '../../src/nbd/constants.js';
import { NbdServer } from '../../src/nbd/server.js';
import { fcParams } from './helpers/fc-params.js';
import { MemoryBlockDevice, patternBytes } from './helpers/memory-block-device.js';
import { SplittingProxy } from './helpers/splitting-proxy.js';

const SLOT = 16 * 1024;
const SLOTS = 16;
const SIZE = SLOT * SLOTS;

type Op =
  | { kind: 'write'; at: number; len: number; gen: number; fua: boolean }
  | { kind: 'zero'; at: number; len: number; noHole: boolean }
  | { kind: 'trim'; at: number; len: number };

/** Ops stay inside their own slot, so running them all at once has one defined result. */
const slotOp = (slot: number): fc.Arbitrary<Op> =>
  fc
    .tuple(fc.integer({ min: 0, max: SLOT - 1 }), fc.integer({ min: 1, max: SLOT }))
    .map(([a, b]) => ({ at: slot * SLOT + a, len: Math.min(b, SLOT - a) }))
    .chain(({ at, len }) =>
      fc.oneof(
        fc.record({ kind: fc.constant('write' as const), at: fc.constant(at), len: fc.constant(len), gen: fc.integer({ min: 1, max: 200 }), fua: fc.boolean() }),
        fc.record({ kind: fc.constant('zero' as const), at: fc.constant(at), len: fc.constant(len), noHole: fc.boolean() }),
        fc.record({ kind: fc.constant('trim' as const), at: fc.constant(at), len: fc.constant(len) }),
      ),
    );

const scenario = fc.tuple(...Array.from({ length: SLOTS }, (_, s) => fc.array(slotOp(s), { maxLength: 3 })));

describe('client <-> server through a stream-splitting proxy', () => {
  let server: NbdServer;
  let port: number;
  let disk: MemoryBlockDevice;

  beforeAll(async () => {
    disk = new MemoryBlockDevice(SIZE, { granule: 4096 });
    server = new NbdServer({ exports: disk, logger: silentLogger(), maxPayload: 8192 });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
  });

  afterAll(async () => {
    await server.close();
  });

  it('random concurrent writes, zeroes and trims match the model; reads and block status agree', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, fc.integer({ min: 0, max: 0x7fffffff }), fc.boolean(), async (perSlot, seed, structured) => {
        disk.data.fill(0);
        await disk.trim(0, SIZE);
        const model = Buffer.alloc(SIZE);
        const proxy = await SplittingProxy.start(port, seed);
        const c = await NbdClient.connect(`nbd://127.0.0.1:${proxy.port}/disk`, undefined, { structuredReplies: structured, maxInFlight: 8 });
        try {
          await Promise.all(
            perSlot.map(async (ops) => {
              for (const op of ops) {
                if (op.kind === 'write') {
                  const data = patternBytes(op.at, op.len, op.gen);
                  data.copy(model, op.at);
                  await c.write(op.at, data, { fua: op.fua });
                } else if (op.kind === 'zero') {
                  model.fill(0, op.at, op.at + op.len);
                  await c.writeZeroes(op.at, op.len, { noHole: op.noHole });
                } else {
                  // TRIM leaves contents undefined by the spec; our device zeroes them.
                  model.fill(0, op.at, op.at + op.len);
                  await c.trim(op.at, op.len);
                }
              }
            }),
          );
          const whole = await c.read(0, SIZE);
          expect(whole.equals(model)).toBe(true);
          const ext = await c.blockStatus(0, SIZE);
          expect(ext.reduce((a, e) => a + e.length, 0)).toBe(SIZE);
          for (const e of ext) {
            if (e.flags & C.NBD_STATE_ZERO) expect(model.subarray(e.offset, e.offset + e.length).every((b) => b === 0)).toBe(true);
          }
        } finally {
          await c.close();
          await proxy.close();
        }
      }),
      fcParams(25),
    );
  }, 120_000);
});
