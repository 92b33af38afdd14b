// The byte layout of the binary message payloads and the caps on control-message fields, written down once for
// the message encoder and decoders. (Frame-level constants, types and limits are in constants.ts.)

/** EXTENTS: one record per zero run, u64 offset · u64 length. */
export const EXTENT_RECORD_BYTES = 16;
export const EXTENT_LENGTH_AT = 8;
/** BLOCK_DIGESTS: one record per block, u32 block index · u32 crc32. */
export const DIGEST_RECORD_BYTES = 8;
export const DIGEST_CRC_AT = 4;
/** RAM_PAGES: u32 page count, then one u32 index per page, then the data of the non-zero pages. */
export const RAM_INDEX_BYTES = 4;
/** Offset of the u32 length after the u64 offset that opens BLOCK_REQ and BLOCK_ZERO. */
export const BLOCK_LENGTH_AT = 8;
/** Offset of BLOCK_REQ's u8 class, after offset and length. */
export const BLOCK_CLASS_AT = 12;
/** BLOCK_ZERO: u64 offset · u32 length. */
export const BLOCK_ZERO_PAYLOAD = 12;
/** BLOCK_DATA: the u64 offset prefix before the data. */
export const BLOCK_DATA_PREFIX = 8;
/** BLOCK_ERR: u32 errno before the message text. */
export const BLOCK_ERR_ERRNO_BYTES = 4;
/** BLOCK_ERR's text (UTF-8 bytes) is a hint for the log, cut so an error frame stays small; longer is malformed. */
export const BLOCK_ERR_MAX_MESSAGE = 512;

/** Any string field of a control message: long enough for any path, reason or definition name, yet bounded. */
export const MAX_STRING = 4096;
/** Any array field of a control message (versions, capabilities): far above what a peer honestly sends. */
export const MAX_ARRAY = 256;
/** One capability name. */
export const MAX_CAPABILITY_NAME = 64;
/** BEGIN's image host name: a DNS name is at most 253 characters. */
export const MAX_IMAGE_HOST = 256;
/** BEGIN's image device and inode numbers: decimal u64, at most 20 digits. */
export const MAX_U64_DIGITS = 20;
