// S's image, checked and opened before anything else happens: a directory, an empty or unreadable file or an
// unreachable NBD export is an operator mistake found at start (one line, exit 2), never after cut-over.
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { isPostcopyError, UsageError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { NbdSourceImage } from '../nbd/nbd-source-image.js';
import { blockDeviceSize, FileImage } from '../image/file-image.js';
import { isNbdUri } from '../nbd/uri.js';

/** A raw image file or block device S can serve: exists, is one of those, readable (writable if asked), not empty. */
function checkImageFile(path: string, opts: { writable: boolean }): void {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--image ${path}: ${describeFsError(e)}`);
  }
  if (st.isDirectory()) throw new UsageError('PC_ERR_USAGE', `--image ${path} is a directory, not an image file`);
  if (!st.isFile() && !st.isBlockDevice()) throw new UsageError('PC_ERR_USAGE', `--image ${path} is neither a regular file nor a block device`);
  try {
    accessSync(path, opts.writable ? constants.R_OK | constants.W_OK : constants.R_OK);
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', `--image ${path} is not ${opts.writable ? 'readable and writable (the simulated guest writes it)' : 'readable'}: ${describeFsError(e)}`);
  }
  const size = st.isBlockDevice() ? blockDeviceSize(st) : st.size;
  if (size === 0) throw new UsageError('PC_ERR_USAGE', `--image ${path} is empty (0 bytes): there is nothing to migrate`);
}

/** Check, then open a file image (the simulated guest writes it before cut-over); `log` hears how its zero runs were found. */
export function openImageFile(path: string, opts: { writable: boolean; log?: Logger }): FileImage {
  checkImageFile(path, opts);
  try {
    return FileImage.open(path, opts);
  } catch (e) {
    // Changed between the check and the open: still the operator's file, still a start-up mistake.
    throw new UsageError('PC_ERR_USAGE', `--image ${path}: ${isPostcopyError(e) ? e.detail : String(e)}`);
  }
}

/** Reach an NBD export now, before the destination is contacted; an unreachable or empty one is refused. */
export async function openImageNbd(uri: string, log: Logger): Promise<NbdSourceImage> {
  const [{ NbdSourceImage }, { parseNbdUri }] = await Promise.all([import('../nbd/nbd-source-image.js'), import('../nbd/uri.js')]);
  let image: NbdSourceImage;
  try {
    const parsed = parseNbdUri(uri);
    image = await NbdSourceImage.open(parsed.address, parsed.exportName, { logger: log });
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new UsageError('PC_ERR_USAGE', `--image ${uri}: cannot reach the NBD export (${why})`);
  }
  if (image.size === 0) {
    await image.close().catch(() => {});
    throw new UsageError('PC_ERR_USAGE', `--image ${uri}: the NBD export is empty (0 bytes): there is nothing to migrate`);
  }
  return image;
}

function describeFsError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  return e instanceof Error ? e.message : String(e);
}
