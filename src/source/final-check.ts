// The final check's reads: D's digests of blocks this process never sent (D's zero map from an NBD backend, or S
// restarted) are compared with the image as it is now; with the mismatches already tallied they are the blocks
// where D differs from our image (none, before S retires).
import type { SourceImage } from '../common/block-device.js';
import { crc32 } from '../common/crc32.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { MISMATCH_LOG_BLOCKS } from './constants.js';
import type { DigestTally } from './source-core-types.js';

export async function finalCheck(image: SourceImage, blockSize: number, tally: DigestTally, log: Logger, events: EventSink): Promise<number[]> {
  const size = image.size;
  const bad = [...tally.bad];
  const started = performance.now();
  for (const [block, crc] of tally.unknown) {
    const offset = block * blockSize;
    if (crc32(await image.read(offset, Math.min(blockSize, size - offset))) !== crc) bad.push(block);
  }
  bad.sort((a, b) => a - b);
  log.info({ blocks: tally.received, reread: tally.unknown.length, mismatched: bad.length, ms: Math.round(performance.now() - started) }, 'final check of the destination image');
  events.emit('final-check', { blocks: tally.received, mismatched: bad.length });
  if (bad.length > 0) log.error({ blocks: bad.slice(0, MISMATCH_LOG_BLOCKS), count: bad.length }, 'destination holds blocks that differ from this image; they will be fetched again');
  return bad;
}
