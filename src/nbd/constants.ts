// Every NBD wire constant (doc/proto.md of NetworkBlockDevice/nbd), written down once, by topic, plus nameOf…()
// helpers for logs. Import this module (`import * as C from './constants.js'`); the topic files are its parts.
export * from './constants-handshake.js';
export * from './constants-transmission.js';
export * from './constants-limits.js';
export * from './constants-layout.js';
export * from './constants-names.js';
