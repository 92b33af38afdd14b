// Where each field sits in the NBD messages (doc/proto.md): byte offsets inside each fixed header and payload, so
// the encoders and decoders name the field they read or write. Every offset follows from the spec's field order.

/** Widths of the spec's integer fields. */
export const U16_BYTES = 2;
export const U32_BYTES = 4;
export const U64_BYTES = 8;

/** Greeting: NBDMAGIC u64 · IHAVEOPT u64 · handshake flags u16. */
export const GREETING_AT = { magic: 0, ihaveopt: 8, flags: 16 } as const;
/** The client's flags after the greeting: one u32. */
export const CLIENT_FLAGS_BYTES = U32_BYTES;
/** Option request header: IHAVEOPT u64 · option u32 · data length u32. */
export const OPTION_AT = { ihaveopt: 0, option: 8, length: 12 } as const;
/** Option reply header: magic u64 · option u32 · reply type u32 · data length u32. */
export const OPTION_REPLY_AT = { magic: 0, option: 8, type: 12, length: 16 } as const;
/** EXPORT_NAME reply: size u64 · transmission flags u16 (then the padding). */
export const EXPORT_NAME_REPLY_AT = { size: 0, flags: 8 } as const;

/** Transmission request and reply headers open with a u32 magic that says which header follows. */
export const TRANSMISSION_MAGIC_BYTES = U32_BYTES;
/** Request header: magic u32 · command flags u16 · type u16 · cookie u64 · offset u64 · length u32. */
export const REQUEST_AT = { magic: 0, flags: 4, command: 6, cookie: 8, offset: 16, length: 24 } as const;
/** Simple reply header: magic u32 · error u32 · cookie u64. */
export const SIMPLE_REPLY_AT = { magic: 0, error: 4, cookie: 8 } as const;
/** Structured reply chunk header: magic u32 · flags u16 · type u16 · cookie u64 · payload length u32. */
export const CHUNK_AT = { magic: 0, flags: 4, type: 6, cookie: 8, length: 16 } as const;

/** OFFSET_DATA chunk: offset u64 · data (at least one byte). */
export const OFFSET_DATA_AT = { offset: 0, data: 8 } as const;
/** OFFSET_HOLE chunk: offset u64 · hole length u32. */
export const OFFSET_HOLE_AT = { offset: 0, length: 8 } as const;
export const OFFSET_HOLE_BYTES = 12;
/** BLOCK_STATUS chunk: context id u32 · then extents of length u32 · flags u32. */
export const BLOCK_STATUS_AT = { contextId: 0, extents: 4 } as const;
export const EXTENT_AT = { length: 0, flags: 4 } as const;
export const EXTENT_BYTES = 8;
/** ERROR chunk: error u32 · message length u16 · message (ERROR_OFFSET: then offset u64). */
export const ERROR_CHUNK_AT = { error: 0, messageLength: 4, message: 6 } as const;

/** REP_INFO body: info id u16 · the item. */
export const INFO_REPLY_AT = { id: 0, body: 2 } as const;
/** INFO_EXPORT item: id u16 · size u64 · transmission flags u16. */
export const INFO_EXPORT_AT = { id: 0, size: 2, flags: 10 } as const;
/** INFO_BLOCK_SIZE item: id u16 · minimum u32 · preferred u32 · maximum u32. */
export const INFO_BLOCK_SIZE_AT = { id: 0, minimum: 2, preferred: 6, maximum: 10 } as const;
/** REP_SERVER body: name length u32 · name · description. */
export const REP_SERVER_AT = { nameLength: 0, name: 4 } as const;
/** REP_META_CONTEXT body: context id u32 · name. */
export const REP_META_CONTEXT_AT = { id: 0, name: 4 } as const;

/** INFO/GO option data: name length u32 · name · count u16 · count × info id u16. */
export const INFO_REQUEST_AT = { nameLength: 0, name: 4 } as const;
/** The smallest INFO/GO data: an empty name and no ids. */
export const INFO_REQUEST_MIN_BYTES = U32_BYTES + U16_BYTES;
/** LIST_/SET_META_CONTEXT option data: name length u32 · export · count u32 · count × (length u32 · query). */
export const META_REQUEST_AT = { nameLength: 0, name: 4 } as const;
/** The smallest meta context data: an empty export name and no queries. */
export const META_REQUEST_MIN_BYTES = U32_BYTES + U32_BYTES;
