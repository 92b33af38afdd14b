// Constants of the image files S serves from and D's CLI opens (a fallback image): reading them, scanning them for zeroes.
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';

/** Granularity of the zero map: runs are whole multiples of this (the tail may be shorter); 64 KiB, one default block. */
export const ZERO_SCAN_GRAIN = 64 * 1024;
/** Bytes the zero scan reads per step: the block server's chunk, so a step's buffer can be sent as it is. */
export const SCAN_CHUNK = BULK_CHUNK_BYTES;
/** The scan hands its zero runs over at least this often (bytes scanned): D skips them soon, in frames of a useful size. */
export const ZERO_RUN_REPORT_BYTES = 2 * 1024 * 1024;

/** Unit of Linux's /sys/dev/block/M:m/size, whatever the device's own sector size. */
export const SYSFS_SECTOR_BYTES = 512;
