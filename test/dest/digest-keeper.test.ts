// The digest keeper on its own, over a recorded image: which runs the final check reads (only those holding a
// pristine block whose digest it lacks), their bounds, one reused buffer, and a yield after each read.
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BlockGeometry } from '../../src/dest/block-geometry.js';
import { BlockTable } from '../../src/dest/block-table.js';
import { DigestKeeper, type FinalCheckMode } from '../../src/dest/digest-keeper.js';
import type { ImageHandle } from '../../src/dest/image-file.js';

const MIB = 1024 * 1024;
// 1 MiB blocks: a 4 MiB read run holds four. Ten blocks, the last one short.
const BS = MIB;
const SIZE = 9 * MIB + 5000;
const BLOCKS = 10;

function setup(mode: FinalCheckMode) {
  const data = Buffer.alloc(SIZE);
  for (let i = 0; i + 4 <= SIZE; i += 4) data.writeUInt32BE(i ^ 0x1234, i);
  const reads: Array<[number, number]> = [];
  const buffers = new Set<Buffer>();
  const image = {
    readInto(buf: Buffer, offset: number, length: number): Buffer {
      reads.push([offset, length]);
      buffers.add(buf);
      data.copy(buf, 0, offset, offset + length);
      return buf;
    },
  } as unknown as ImageHandle;
  const geometry = new BlockGeometry(SIZE, BS, BLOCKS);
  const table = new BlockTable(BLOCKS);
  const keeper = new DigestKeeper(geometry, table, image, mode);
  const blockData = (b: number) => data.subarray(b * BS, Math.min(SIZE, (b + 1) * BS));
  const crcOf = (b: number) => crc32(blockData(b)) >>> 0;
  return { data, reads, buffers, table, keeper, blockData, crcOf };
}

describe('digest keeper', () => {
  it('digest mode reads only the run holding a pristine block without a digest, clipped to the image', async () => {
    const { reads, table, keeper, blockData, crcOf } = setup('digest');
    for (let b = 0; b < 4; b++) table.guestWrote(b, true);
    for (let b = 4; b < 8; b++) table.sourceArrived(b, keeper.ofData(b, blockData(b)));
    // Block 8 arrived before a restart: no digest. Block 9 (short) is zeroes.
    table.sourceArrived(8);
    table.zeroArrived(9, keeper.ofZero(9));
    const d = await keeper.pristineDigests();
    expect(reads).toEqual([[8 * MIB, MIB + 5000]]);
    expect([...d.blocks]).toEqual([4, 5, 6, 7, 8, 9]);
    expect([...d.crcs]).toEqual([4, 5, 6, 7, 8].map(crcOf).concat(crc32(Buffer.alloc(5000)) >>> 0));
  });

  it('readback mode reads every run with a pristine block (zero blocks too), in one reused buffer; guest runs are skipped', async () => {
    const { reads, buffers, table, keeper, blockData, crcOf } = setup('readback');
    for (let b = 0; b < 4; b++) table.guestWrote(b, true);
    for (let b = 4; b < 9; b++) table.sourceArrived(b, keeper.ofData(b, blockData(b)));
    table.zeroArrived(9, keeper.ofZero(9));
    expect([keeper.ofData(4, blockData(4)), keeper.ofZero(9)]).toEqual([undefined, undefined]);
    const d = await keeper.pristineDigests();
    expect(reads).toEqual([
      [4 * MIB, 4 * MIB],
      [8 * MIB, MIB + 5000],
    ]);
    expect(buffers.size).toBe(1);
    // Block 9 reads back as what the image holds there, not as zeroes.
    expect([...d.crcs]).toEqual([4, 5, 6, 7, 8, 9].map(crcOf));
  });

  it('yields to the event loop after a run it read, and only then', async () => {
    const { table, keeper, blockData } = setup('digest');
    table.sourceArrived(0, keeper.ofData(0, blockData(0)));
    const order: string[] = [];
    setImmediate(() => order.push('turn'));
    await keeper.pristineDigests();
    order.push('done without a read');
    table.sourceArrived(5);
    setImmediate(() => order.push('turn'));
    await keeper.pristineDigests();
    order.push('done after a read');
    expect(order).toEqual(['done without a read', 'turn', 'turn', 'done after a read']);
  });
});
