// `postcopy verify`: check a destination image against the source image overlaid with the guest's writes.
import { compareImages, verifyMigration } from '../guest/verify.js';
import { loadWriteMap } from '../guest/write-map.js';
import { parseCommandArgs, optional, required } from './args.js';
import { EXIT } from './exit-codes.js';
import { checkReadableImage } from './preflight.js';

export const VERIFY_HELP = `Usage: postcopy verify --source-image PATH --dest-image PATH [--writes FILE]

Without --writes: the two images must be equal byte for byte.
With --writes (the guest-writes.json a destination with the simulated guest leaves in its state dir):
the destination must equal the source overlaid with exactly those writes.
Exit 0 when they match, 6 when not.`;

export async function runVerify(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, { 'source-image': { type: 'string' }, 'dest-image': { type: 'string' }, writes: { type: 'string' } });
  if (values.help) {
    process.stdout.write(VERIFY_HELP + '\n');
    return EXIT.OK;
  }
  const sourceImage = required(values, 'source-image');
  const destImage = required(values, 'dest-image');
  const writes = optional(values, 'writes');
  // A missing or unreadable file is the operator's mistake (exit 2), not a mismatch (6) or a bug (1).
  checkReadableImage(sourceImage, '--source-image');
  checkReadableImage(destImage, '--dest-image');
  if (writes !== undefined) checkReadableImage(writes, '--writes');
  if (!writes) {
    const r = await compareImages(sourceImage, destImage);
    process.stdout.write(r.ok ? `identical (${r.sizes.a} bytes)\n` : `DIFFER at offset ${r.firstDifference}\n`);
    return r.ok ? EXIT.OK : EXIT.VERIFY_FAILED;
  }
  const { map } = loadWriteMap(writes);
  const r = await verifyMigration({ sourceImage, destImage, writeMap: map.entries() });
  process.stdout.write(`${r.ok ? 'verified' : 'MISMATCH'}: ${r.blocksChecked} blocks, ${r.unitsOverlaid} units overlaid, ${r.mismatchedBlocks} mismatched\n`);
  for (const m of r.mismatches) process.stdout.write(`  at ${m.offset}: expected ${m.expected}\n`);
  return r.ok ? EXIT.OK : EXIT.VERIFY_FAILED;
}
