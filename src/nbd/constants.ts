// Every NBD wire constant (doc/proto.md of NetworkBlockDevice/nbd), written down once,
// plus nameOf…() helpers so logs say "NBD_OPT_GO" instead of 7.

// ---- magics ----
/** "NBDMAGIC": first 8 bytes of the server greeting. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": second half of the newstyle greeting and the prefix of every option request. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
/** Oldstyle greeting's second magic (obsolete; recognised only to reject it clearly). */
export const NBD_OLDSTYLE_MAGIC = 0x00420281861253n;
/** Transmission request magic (compact 28-byte header). */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Extended-header request magic (NBD_OPT_EXTENDED_HEADERS; we never negotiate it). */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** Simple reply magic. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Structured reply chunk magic. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended reply magic (only after NBD_OPT_EXTENDED_HEADERS; never negotiated by us). */
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

// ---- fixed sizes ----
/** Greeting: NBDMAGIC · IHAVEOPT · u16 handshake flags. */
export const GREETING_SIZE = 18;
/** Option request header: IHAVEOPT · u32 option · u32 length. */
export const OPTION_HEADER_SIZE = 16;
/** Option reply header: magic · u32 option · u32 type · u32 length. */
export const OPTION_REPLY_HEADER_SIZE = 20;
/** Transmission request header. */
export const REQUEST_HEADER_SIZE = 28;
/** Simple reply header. */
export const SIMPLE_REPLY_HEADER_SIZE = 16;
/** Structured reply chunk header. */
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
/** Zero padding after the EXPORT_NAME reply unless both sides set NO_ZEROES. */
export const EXPORT_NAME_PADDING = 124;
/** EXPORT_NAME reply without padding: u64 size · u16 tflags. */
export const EXPORT_NAME_REPLY_SIZE = 10;
/** Longest string (export name, description, context name) the spec allows. */
export const NBD_MAX_STRING = 4096;
/** Well-known TCP port. */
export const NBD_DEFAULT_PORT = 10809;

// ---- handshake flags (server, u16) ----
/** Server supports fixed newstyle negotiation. */
export const NBD_FLAG_FIXED_NEWSTYLE = 0x1;
/** Server may omit the 124 zero bytes after EXPORT_NAME. */
export const NBD_FLAG_NO_ZEROES = 0x2;

// ---- client flags (u32) ----
/** Client speaks fixed newstyle. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 0x1;
/** Client wants the EXPORT_NAME padding omitted. */
export const NBD_FLAG_C_NO_ZEROES = 0x2;

// ---- options ----
/** Pick an export the old way: no option reply, transmission starts. */
export const NBD_OPT_EXPORT_NAME = 1;
/** End negotiation without entering transmission. */
export const NBD_OPT_ABORT = 2;
/** List exports (REP_SERVER each, then ACK). */
export const NBD_OPT_LIST = 3;
/** Withdrawn PEEK_EXPORT; answered like any unknown option. */
export const NBD_OPT_PEEK_EXPORT = 4;
/** Upgrade the socket to TLS. */
export const NBD_OPT_STARTTLS = 5;
/** Ask about an export without selecting it. */
export const NBD_OPT_INFO = 6;
/** Select an export and enter transmission after ACK. */
export const NBD_OPT_GO = 7;
/** Enable structured replies. */
export const NBD_OPT_STRUCTURED_REPLY = 8;
/** List metadata contexts (ids are 0). */
export const NBD_OPT_LIST_META_CONTEXT = 9;
/** Select metadata contexts for BLOCK_STATUS. */
export const NBD_OPT_SET_META_CONTEXT = 10;
/** 64-bit headers (experimental; we answer ERR_UNSUP). */
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- option reply types ----
/** Option done, no data. */
export const NBD_REP_ACK = 1;
/** One export: u32 namelen · name · description. */
export const NBD_REP_SERVER = 2;
/** One info item: u16 id · body. */
export const NBD_REP_INFO = 3;
/** One metadata context: u32 id · name. */
export const NBD_REP_META_CONTEXT = 4;
/** Bit set on every option error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
/** Option not supported. */
export const NBD_REP_ERR_UNSUP = 0x80000001;
/** Refused by policy (e.g. STARTTLS without TLS). */
export const NBD_REP_ERR_POLICY = 0x80000002;
/** Option data malformed or option not valid now. */
export const NBD_REP_ERR_INVALID = 0x80000003;
/** Not supported on this platform. */
export const NBD_REP_ERR_PLATFORM = 0x80000004;
/** TLS required first. */
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
/** Unknown export. */
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
/** Server shutting down; client must ABORT. */
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
/** Export needs the client to honour block sizes. */
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
/** Request or reply too big. */
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
/** Extended headers required. */
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

// ---- info ids (INFO/GO) ----
/** u64 size · u16 tflags (mandatory before ACK). */
export const NBD_INFO_EXPORT = 0;
/** Canonical export name. */
export const NBD_INFO_NAME = 1;
/** Human-readable description. */
export const NBD_INFO_DESCRIPTION = 2;
/** u32 minimum · u32 preferred · u32 maximum payload. */
export const NBD_INFO_BLOCK_SIZE = 3;
/** Exact REP_INFO lengths (u16 id included) qemu checks. */
export const INFO_EXPORT_LENGTH = 12;
export const INFO_BLOCK_SIZE_LENGTH = 14;

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

// ---- caps and defaults (ours, and the spec's) ----
/** Default (and most widely honoured) maximum payload: 32 MiB. */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Default preferred block size. */
export const NBD_DEFAULT_PREFERRED_BLOCK = 4096;
/** Largest minimum block size the spec allows. */
export const NBD_MAX_MIN_BLOCK = 64 * 1024;
/** A request payload beyond this is treated as a DoS: the connection is closed. */
export const NBD_DOS_PAYLOAD = 64 * 1024 * 1024;
/** Most extents a BLOCK_STATUS chunk may carry. */
export const NBD_MAX_EXTENTS = 1 << 20;
/** The spec's "unlimited" maximum payload. */
export const NBD_MAX_PAYLOAD_UNLIMITED = 0xffffffff;

const OPTION_NAMES: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
  [NBD_OPT_ABORT]: 'NBD_OPT_ABORT',
  [NBD_OPT_LIST]: 'NBD_OPT_LIST',
  [NBD_OPT_PEEK_EXPORT]: 'NBD_OPT_PEEK_EXPORT',
  [NBD_OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
  [NBD_OPT_INFO]: 'NBD_OPT_INFO',
  [NBD_OPT_GO]: 'NBD_OPT_GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
  [NBD_OPT_EXTENDED_HEADERS]: 'NBD_OPT_EXTENDED_HEADERS',
};

const REPLY_NAMES: Record<number, string> = {
  [NBD_REP_ACK]: 'NBD_REP_ACK',
  [NBD_REP_SERVER]: 'NBD_REP_SERVER',
  [NBD_REP_INFO]: 'NBD_REP_INFO',
  [NBD_REP_META_CONTEXT]: 'NBD_REP_META_CONTEXT',
  [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
  [NBD_REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
  [NBD_REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
  [NBD_REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
  [NBD_REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
  [NBD_REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
  [NBD_REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [NBD_REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
  [NBD_REP_ERR_EXT_HEADER_REQD]: 'NBD_REP_ERR_EXT_HEADER_REQD',
};

const INFO_NAMES: Record<number, string> = {
  [NBD_INFO_EXPORT]: 'NBD_INFO_EXPORT',
  [NBD_INFO_NAME]: 'NBD_INFO_NAME',
  [NBD_INFO_DESCRIPTION]: 'NBD_INFO_DESCRIPTION',
  [NBD_INFO_BLOCK_SIZE]: 'NBD_INFO_BLOCK_SIZE',
};

const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'NBD_CMD_READ',
  [NBD_CMD_WRITE]: 'NBD_CMD_WRITE',
  [NBD_CMD_DISC]: 'NBD_CMD_DISC',
  [NBD_CMD_FLUSH]: 'NBD_CMD_FLUSH',
  [NBD_CMD_TRIM]: 'NBD_CMD_TRIM',
  [NBD_CMD_CACHE]: 'NBD_CMD_CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
  [NBD_CMD_RESIZE]: 'NBD_CMD_RESIZE',
};

const CHUNK_NAMES: Record<number, string> = {
  [NBD_REPLY_TYPE_NONE]: 'NBD_REPLY_TYPE_NONE',
  [NBD_REPLY_TYPE_OFFSET_DATA]: 'NBD_REPLY_TYPE_OFFSET_DATA',
  [NBD_REPLY_TYPE_OFFSET_HOLE]: 'NBD_REPLY_TYPE_OFFSET_HOLE',
  [NBD_REPLY_TYPE_BLOCK_STATUS]: 'NBD_REPLY_TYPE_BLOCK_STATUS',
  [NBD_REPLY_TYPE_BLOCK_STATUS_EXT]: 'NBD_REPLY_TYPE_BLOCK_STATUS_EXT',
  [NBD_REPLY_TYPE_ERROR]: 'NBD_REPLY_TYPE_ERROR',
  [NBD_REPLY_TYPE_ERROR_OFFSET]: 'NBD_REPLY_TYPE_ERROR_OFFSET',
};

const ERRNO_NAMES: Record<number, string> = {
  0: 'OK',
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

const TFLAG_NAMES: [number, string][] = [
  [NBD_FLAG_HAS_FLAGS, 'HAS_FLAGS'],
  [NBD_FLAG_READ_ONLY, 'READ_ONLY'],
  [NBD_FLAG_SEND_FLUSH, 'SEND_FLUSH'],
  [NBD_FLAG_SEND_FUA, 'SEND_FUA'],
  [NBD_FLAG_ROTATIONAL, 'ROTATIONAL'],
  [NBD_FLAG_SEND_TRIM, 'SEND_TRIM'],
  [NBD_FLAG_SEND_WRITE_ZEROES, 'SEND_WRITE_ZEROES'],
  [NBD_FLAG_SEND_DF, 'SEND_DF'],
  [NBD_FLAG_CAN_MULTI_CONN, 'CAN_MULTI_CONN'],
  [NBD_FLAG_SEND_RESIZE, 'SEND_RESIZE'],
  [NBD_FLAG_SEND_CACHE, 'SEND_CACHE'],
  [NBD_FLAG_SEND_FAST_ZERO, 'SEND_FAST_ZERO'],
  [NBD_FLAG_BLOCK_STATUS_PAYLOAD, 'BLOCK_STATUS_PAYLOAD'],
];

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

export function nameOfOption(option: number): string {
  return OPTION_NAMES[option] ?? `NBD_OPT_UNKNOWN(${option})`;
}

export function nameOfReplyType(type: number): string {
  return REPLY_NAMES[type] ?? `NBD_REP_UNKNOWN(${hex(type)})`;
}

export function nameOfInfo(id: number): string {
  return INFO_NAMES[id] ?? `NBD_INFO_UNKNOWN(${id})`;
}

export function nameOfCommand(cmd: number): string {
  return COMMAND_NAMES[cmd] ?? `NBD_CMD_UNKNOWN(${cmd})`;
}

export function nameOfChunkType(type: number): string {
  return CHUNK_NAMES[type] ?? `NBD_REPLY_TYPE_UNKNOWN(${hex(type)})`;
}

export function nameOfErrno(errno: number): string {
  return ERRNO_NAMES[errno] ?? `ERRNO(${errno})`;
}

/** "HAS_FLAGS|SEND_FLUSH|…" for a transmission-flags word. */
export function nameOfTransmissionFlags(flags: number): string {
  const names = TFLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
  const known = TFLAG_NAMES.reduce((acc, [bit]) => acc | bit, 0);
  if ((flags & ~known & 0xffff) !== 0) names.push(hex(flags & ~known & 0xffff));
  return names.join('|') || '0';
}
