// NBD wire constants of the transmission phase (doc/proto.md): transmission flags, commands and their flags,
// structured reply chunks, errno values and metadata contexts. Every value is the spec's.

// ---- transmission flags (u16) ----
/** Always set: the other flags are meaningful. */
export const NBD_FLAG_HAS_FLAGS = 0x1;
/** Export is read-only. */
export const NBD_FLAG_READ_ONLY = 0x2;
/** FLUSH is supported. */
export const NBD_FLAG_SEND_FLUSH = 0x4;
/** FUA flag is supported. */
export const NBD_FLAG_SEND_FUA = 0x8;
/** Rotational medium hint. */
export const NBD_FLAG_ROTATIONAL = 0x10;
/** TRIM is supported. */
export const NBD_FLAG_SEND_TRIM = 0x20;
/** WRITE_ZEROES (and NO_HOLE) supported. */
export const NBD_FLAG_SEND_WRITE_ZEROES = 0x40;
/** DF flag on READ supported (structured replies only). */
export const NBD_FLAG_SEND_DF = 0x80;
/** Flush/FUA on one connection is visible on all. */
export const NBD_FLAG_CAN_MULTI_CONN = 0x100;
/** RESIZE command (experimental). */
export const NBD_FLAG_SEND_RESIZE = 0x200;
/** CACHE is supported. */
export const NBD_FLAG_SEND_CACHE = 0x400;
/** FAST_ZERO flag on WRITE_ZEROES supported. */
export const NBD_FLAG_SEND_FAST_ZERO = 0x800;
/** BLOCK_STATUS may carry a payload (extended headers only). */
export const NBD_FLAG_BLOCK_STATUS_PAYLOAD = 0x1000;

// ---- commands ----
/** Read length bytes. */
export const NBD_CMD_READ = 0;
/** Write the payload. */
export const NBD_CMD_WRITE = 1;
/** Disconnect: no reply. */
export const NBD_CMD_DISC = 2;
/** Make acknowledged writes durable. */
export const NBD_CMD_FLUSH = 3;
/** Discard hint. */
export const NBD_CMD_TRIM = 4;
/** Prefetch hint. */
export const NBD_CMD_CACHE = 5;
/** Zero a range without a payload. */
export const NBD_CMD_WRITE_ZEROES = 6;
/** Query metadata contexts. */
export const NBD_CMD_BLOCK_STATUS = 7;
/** Resize (experimental). */
export const NBD_CMD_RESIZE = 8;

// ---- command flags (u16) ----
/** Force unit access: durable before the reply. */
export const NBD_CMD_FLAG_FUA = 0x1;
/** WRITE_ZEROES must not punch a hole. */
export const NBD_CMD_FLAG_NO_HOLE = 0x2;
/** READ: don't fragment the reply. */
export const NBD_CMD_FLAG_DF = 0x4;
/** BLOCK_STATUS: exactly one extent. */
export const NBD_CMD_FLAG_REQ_ONE = 0x8;
/** WRITE_ZEROES: fail fast with ENOTSUP unless zeroing is fast. */
export const NBD_CMD_FLAG_FAST_ZERO = 0x10;
/** Extended headers: length is a payload length. */
export const NBD_CMD_FLAG_PAYLOAD_LEN = 0x20;

// ---- structured reply ----
/** Chunk flag: last chunk of this request. */
export const NBD_REPLY_FLAG_DONE = 0x1;
/** No payload; must carry DONE. */
export const NBD_REPLY_TYPE_NONE = 0;
/** u64 offset · data. */
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
/** u64 offset · u32 size: reads as zeroes. */
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
/** u32 context id · n × (u32 length · u32 flags). */
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
/** Extended-header block status (never negotiated by us). */
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;
/** Bit 15: an error chunk type. */
export const NBD_REPLY_TYPE_ERROR_BIT = 0x8000;
/** u32 error · u16 msglen · message. */
export const NBD_REPLY_TYPE_ERROR = 0x8001;
/** u32 error · u16 msglen · message · u64 offset. */
export const NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;

// ---- errno values on the wire ----
/** Operation not permitted (write to read-only). */
export const NBD_EPERM = 1;
/** I/O error. */
export const NBD_EIO = 5;
/** Out of memory. */
export const NBD_ENOMEM = 12;
/** Invalid argument (bad command, flag, range, size). */
export const NBD_EINVAL = 22;
/** No space (write past the end). */
export const NBD_ENOSPC = 28;
/** Value too large (DF or oversize payload-less commands). */
export const NBD_EOVERFLOW = 75;
/** Not supported (FAST_ZERO only). */
export const NBD_ENOTSUP = 95;
/** Server shutting down. */
export const NBD_ESHUTDOWN = 108;

// ---- metadata contexts ----
/** The allocation context every server and client understands. */
export const NBD_META_BASE_ALLOCATION = 'base:allocation';
/** LIST_META_CONTEXT wildcard for every base: context. */
export const NBD_META_BASE_NAMESPACE = 'base:';
/** base:allocation: unallocated. */
export const NBD_STATE_HOLE = 0x1;
/** base:allocation: reads as zeroes. */
export const NBD_STATE_ZERO = 0x2;
