// Every constant of the postcopy migration wire, written down once (STYLE.md 3).

/** First 4 bytes of every frame: ASCII "PCY1". A mismatch means the stream is out of sync. */
export const FRAME_MAGIC = 0x50435931;
/** Frame header: magic u32 · type u8 · flags u8 · reserved u16 (0) · id u32 · payload length u32 · payload crc32 u32. */
export const FRAME_HEADER_SIZE = 20;
/** Byte offsets of the header's fields, in the order above (big-endian throughout). */
export const HEADER_MAGIC_AT = 0;
export const HEADER_TYPE_AT = 4; // after the u32 magic
export const HEADER_FLAGS_AT = 5; // after the u8 type
export const HEADER_RESERVED_AT = 6; // after the u8 flags; a u16 that must be 0
export const HEADER_ID_AT = 8; // after the u16 reserved
export const HEADER_LENGTH_AT = 12; // after the u32 id
export const HEADER_CRC_AT = 16; // after the u32 length; FRAME_HEADER_SIZE = 16 + 4
/** Largest payload a frame may declare: one bulk chunk plus its small header, with room to spare. */
export const MAX_FRAME_PAYLOAD = 4 * 1024 * 1024 + 64;
/** Largest JSON control payload (guest definitions included). */
export const MAX_CONTROL_PAYLOAD = 1024 * 1024;
/**
 * Largest payload a peer may declare before it has authenticated: the handshake's messages are a few hundred
 * bytes, so a stranger can make D hold no more than this per connection.
 */
export const MAX_PREAUTH_PAYLOAD = 4096;
/** Connections D lets authenticate at once; more are refused at accept (each is also time-boxed). */
export const MAX_PREAUTH_CONNECTIONS = 32;

/** Oldest protocol version this build speaks; the handshake picks the highest common one. */
export const PROTOCOL_VERSION_MIN = 1;
/** Newest protocol version this build speaks (only 1 exists so far). */
export const PROTOCOL_VERSION_MAX = 1;

/** Frame flags. */
export const FLAG_URGENT = 0x01; // sent on the urgent class (informational; lets captures show priority)
export const FLAG_DONE = 0x02; // last data frame of a block request's reply

/** Frame types. 1..63 control (JSON payload), 64..127 binary data. */
export const MSG = {
  HELLO: 1, // S→D: versions, capabilities, S's nonce, optional resume request, optional ticket id (a host's shared port routes by it)
  CHALLENGE: 2, // D→S: chosen version, D's nonce, D's proof of the key
  AUTH: 3, // S→D: S's proof of the key
  WELCOME: 4, // D→S: session id, whether resumed, D's phase
  BEGIN: 5, // S→D: guest definitions, image geometry, S's cookie
  PREPARED: 6, // D→S: D's cookie; D is ready to receive RAM
  RAM_ROUND_END: 7, // S→D: a pre-copy round is finished (stats)
  DEVICE_STATE: 8, // S→D: guest paused; final device state + RAM digest
  FINISH_RESULT: 9, // D→S: running on D, or failed and not running
  ABORT: 10, // either: roll back before cut-over (reason)
  COMPLETE: 11, // D→S: every block present and durable on D; the BLOCK_DIGESTS before it are the final check
  CONFIRM: 12, // S→D: S releases the image and exits
  ERROR: 13, // either: protocol or fatal error, the sender closes after it
  PING: 14, // either: keepalive probe
  PONG: 15, // either: keepalive answer
  EXTENTS_END: 16, // S→D: the zero-extent map is complete
  CREDIT: 17, // D→S: grant of RAM or guest-stream bytes S may send
  GUEST_STREAM_END: 18, // either: no more hypervisor stream bytes in this direction
  DIGEST_MISMATCH: 19, // S→D: these blocks differ from S's image: fetch them again
  EXTENTS: 64, // S→D: zero runs, n × (u64 offset · u64 length)
  RAM_PAGES: 65, // S→D: n × u32 page index (bit 31: zero page, no data) then the non-zero pages' bytes
  BLOCK_REQ: 66, // D→S: id · u64 offset · u32 length · u8 class
  BLOCK_DATA: 67, // S→D: id · u64 offset · data (FLAG_DONE on the last part)
  BLOCK_ZERO: 68, // S→D: id · u64 offset · u32 length: that part reads as zeroes
  BLOCK_ERR: 69, // S→D: id · u32 errno · utf-8 message; the request failed on S
  GUEST_STREAM: 70, // either: bytes of a hypervisor's own migration stream (QEMU), carried as they are
  BLOCK_DIGESTS: 71, // D→S: n × (u32 block · u32 crc32) of the blocks of D's image that hold S's bytes (as written, or read back)
} as const;

export type MsgName = keyof typeof MSG;
export type MsgType = (typeof MSG)[MsgName];

const NAMES = new Map<number, MsgName>(Object.entries(MSG).map(([k, v]) => [v, k as MsgName]));
export function nameOfMsg(type: number): string {
  return NAMES.get(type) ?? `UNKNOWN(${type})`;
}
export function isKnownMsg(type: number): boolean {
  return NAMES.has(type);
}
export function isControlMsg(type: number): boolean {
  return type < 64;
}

/** Block request classes (the u8 class of BLOCK_REQ). */
export const CLASS_URGENT = 0; // a guest is waiting on it
export const CLASS_BULK = 1; // background stream

/** Sizes. */
/** Guest RAM moves in pages of the x86/arm64 base page size, the unit hypervisors track dirtiness in. */
export const RAM_PAGE_SIZE = 4096;
/** Bit 31 of a RAM_PAGES index: the page is all zero and carries no data (indices stay below 2^31 pages = 8 TiB). */
export const RAM_ZERO_PAGE_BIT = 0x80000000;
/** Random bytes in each side's handshake nonce: 256 bits, so a nonce never repeats by chance. */
export const NONCE_BYTES = 32;
/** A nonce on the wire: lower-case hex, two characters a byte. The handshake takes no other length. */
export const NONCE_HEX_CHARS = NONCE_BYTES * 2;
/** Bytes of HELLO's ticket id (a truncated HMAC of the ticket): enough that two tickets never collide on one host. */
export const TICKET_ID_BYTES = 16;
/** A ticket id on the wire: lower-case hex, two characters a byte; the decoder takes no other length. */
export const TICKET_ID_HEX_CHARS = TICKET_ID_BYTES * 2;
/** BLOCK_REQ payload: u64 offset (8) · u32 length (4) · u8 class (1). */
export const BLOCK_REQ_PAYLOAD = 13;
/** Largest data part S puts in one BLOCK_DATA frame: an urgent frame waits behind one of these at most. */
export const BULK_CHUNK_BYTES = 256 * 1024;
/** Smallest migration block size: one page, the unit of the OS's page cache and of most disks' writes. */
export const MIN_BLOCK_SIZE = 4096;
/** Largest migration block size: one bulk chunk, so a block's data never waits behind more than itself. */
export const MAX_BLOCK_SIZE = BULK_CHUNK_BYTES;
/** Largest length one BLOCK_REQ may ask for: 64 bulk chunks, so one request cannot make S read without end. */
export const MAX_BLOCK_REQ_BYTES = 16 * 1024 * 1024;
/** Largest number of (block, crc) entries one BLOCK_DIGESTS frame carries: 8 bytes each, 2 MiB, under MAX_FRAME_PAYLOAD. */
export const MAX_DIGESTS_PER_FRAME = 262144;
/** Largest number of blocks one DIGEST_MISMATCH names: a JSON list that stays well under MAX_CONTROL_PAYLOAD. */
export const MAX_MISMATCH_BLOCKS = 4096;
/** Largest number of extents one EXTENTS frame carries: 16 bytes each, 1 MiB, under MAX_FRAME_PAYLOAD. */
export const MAX_EXTENTS_PER_FRAME = 65536;

/** Shortest ticket secret: 128 bits, so guessing it is no easier than forging an HMAC. */
export const MIN_SECRET_BYTES = 16;

/** Capabilities this build offers; unknown ones from the peer are ignored. */
export const CAPABILITIES = ['zero-extents', 'ram-precopy', 'resume'] as const;
