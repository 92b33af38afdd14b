// Moved to src/image/ (extent-scan.ts, constants.ts); this re-export goes once every importer names the new paths.
export { scanZeroRuns, type ScanHooks } from '../image/extent-scan.js';
export { SCAN_CHUNK, ZERO_SCAN_GRAIN } from '../image/constants.js';
