// Moved to src/image/file-image.ts (D's CLI uses it too); this re-export goes once every importer names the new path.
export { blockDeviceSize, FileImage } from '../image/file-image.js';
