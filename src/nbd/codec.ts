// The NBD codec's public surface: message types, encoders for both directions, option parsers and the two
// streaming decoders, each in its own module. Pure: no sockets, no timers, no logger.
export * from './codec-types.js';
export * from './handshake-encoder.js';
export * from './transmission-encoder.js';
export * from './option-parsers.js';
export { ServerDecoder } from './server-decoder.js';
export { ClientDecoder } from './client-decoder.js';
export { readU64 } from './byte-queue.js';
