// NBD wire constants of the handshake (doc/proto.md of NetworkBlockDevice/nbd): magics, fixed header sizes, flags,
// options, option replies and info ids. Every value is the spec's: a peer only understands these exact numbers.

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
/** Exact REP_INFO length of INFO_EXPORT (u16 id · u64 size · u16 tflags), as qemu checks it. */
export const INFO_EXPORT_LENGTH = 12;
/** Exact REP_INFO length of INFO_BLOCK_SIZE (u16 id · 3 × u32), as qemu checks it. */
export const INFO_BLOCK_SIZE_LENGTH = 14;
