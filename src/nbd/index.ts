// The NBD module's public surface: client (plain and reconnecting), server, the NBD-backed
// SourceImage, and URI parsing. Codec and constants are imported from their own files.
export { NbdClient, parseNbdUri, formatNbdUri } from './client.js';
export type { NbdClientOptions, NbdTarget, NbdAddress, NbdUri, BlockStatusExtent, RequestOptions, ClientState } from './client.js';
export { ReconnectingNbdClient, isConnectionLoss } from './reconnecting-client.js';
export type { ReconnectPolicy } from './reconnecting-client.js';
export { NbdServer, DEFAULT_EXPORT_NAME } from './server.js';
export type { NbdServerOptions, ListenTarget, NbdExport } from './server.js';
export { NbdSourceImage, isTransient } from './nbd-source-image.js';
export type { NbdReader, NbdSourceImageOptions, RetryPolicy } from './nbd-source-image.js';
