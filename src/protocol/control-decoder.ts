// Decode and validate a control message's JSON payload, field by field. Malformed raises ProtocolError.
import { ProtocolError } from '../common/errors.js';
import type { ImageIdentity } from '../common/image-identity.js';
import { MAX_MISMATCH_BLOCKS, TICKET_ID_HEX_CHARS, type MsgName } from './constants.js';
import { Fields, isPlainObject, isU32, malformed } from './message-fields.js';
import { MAX_IMAGE_HOST, MAX_U64_DIGITS } from './message-layout.js';
import type { ControlMessage, GuestDefinition } from './message-types.js';

export function decodeControl(name: MsgName, p: Buffer): ControlMessage {
  let body: unknown;
  try {
    body = p.length === 0 ? {} : JSON.parse(p.toString('utf8'));
  } catch (e) {
    throw new ProtocolError('PC_ERR_MALFORMED', `${name}: not JSON`, { cause: e });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) malformed(name, 'not an object');
  const b = new Fields(name, body as Record<string, unknown>);
  switch (name) {
    case 'HELLO': {
      const versions = b.array('versions');
      // [lowest, highest] version the peer speaks.
      if (versions.length !== 2 || !versions.every(isU32)) malformed(name, 'versions');
      const resume = b.optString('resumeSession');
      const ticket = b.optHex('ticketId');
      if (ticket !== undefined && ticket.length !== TICKET_ID_HEX_CHARS) malformed(name, `ticketId of ${ticket.length} hex characters, must be ${TICKET_ID_HEX_CHARS}`);
      return {
        type: 'HELLO',
        versions: [versions[0] as number, versions[1] as number],
        caps: b.stringArray('caps'),
        nonce: b.hex('nonce'),
        ...(resume !== undefined ? { resumeSession: resume } : {}),
        ...(ticket !== undefined ? { ticketId: ticket } : {}),
      };
    }
    case 'CHALLENGE':
      return { type: 'CHALLENGE', version: b.u32('version'), caps: b.stringArray('caps'), nonce: b.hex('nonce'), proof: b.hex('proof') };
    case 'AUTH':
      return { type: 'AUTH', proof: b.hex('proof') };
    case 'WELCOME':
      return { type: 'WELCOME', sessionId: b.string('sessionId'), resumed: b.bool('resumed'), phase: b.string('phase') };
    case 'BEGIN': {
      const g = b.raw('guest');
      let guest: GuestDefinition | null = null;
      if (g !== null) {
        if (!isPlainObject(g) || !isPlainObject(g.persistent) || !isPlainObject(g.transient)) malformed(name, 'guest');
        guest = g as unknown as GuestDefinition;
      }
      const image = 'image' in b.body ? beginImage(b.raw('image')) : undefined;
      return { type: 'BEGIN', guest, size: b.u64('size'), blockSize: b.u32('blockSize'), cookie: b.string('cookie'), ...(image !== undefined ? { image } : {}) };
    }
    case 'PREPARED':
      return { type: 'PREPARED', cookie: b.string('cookie') };
    case 'RAM_ROUND_END':
      return { type: 'RAM_ROUND_END', round: b.u32('round'), pagesSent: b.u64('pagesSent'), dirtyRemaining: b.u64('dirtyRemaining') };
    case 'DEVICE_STATE': {
      const state = b.raw('state');
      if (!isPlainObject(state)) malformed(name, 'state');
      return { type: 'DEVICE_STATE', state: state as Record<string, unknown>, ramDigest: b.hex('ramDigest') };
    }
    case 'FINISH_RESULT': {
      const error = b.optString('error');
      return { type: 'FINISH_RESULT', running: b.bool('running'), ...(error !== undefined ? { error } : {}) };
    }
    case 'ABORT': {
      const code = b.optString('code');
      return { type: 'ABORT', reason: b.string('reason'), ...(code !== undefined ? { code } : {}) };
    }
    case 'COMPLETE':
      return { type: 'COMPLETE', blocks: b.u64('blocks'), pristineBlocks: b.u64('pristineBlocks') };
    case 'DIGEST_MISMATCH': {
      const blocks = b.raw('blocks');
      if (!Array.isArray(blocks) || blocks.length > MAX_MISMATCH_BLOCKS || !blocks.every(isU32)) malformed(name, 'blocks');
      return { type: 'DIGEST_MISMATCH', blocks: blocks as number[] };
    }
    case 'CONFIRM':
      return { type: 'CONFIRM' };
    case 'ERROR':
      return { type: 'ERROR', code: b.string('code'), message: b.string('message') };
    case 'PING':
      return { type: 'PING', seq: b.u32('seq') };
    case 'PONG':
      return { type: 'PONG', seq: b.u32('seq') };
    case 'EXTENTS_END':
      return { type: 'EXTENTS_END', count: b.u64('count') };
    case 'CREDIT':
      return { type: 'CREDIT', bytes: b.u64('bytes') };
    case 'GUEST_STREAM_END':
      return { type: 'GUEST_STREAM_END' };
    default:
      throw new ProtocolError('PC_ERR_UNKNOWN_TYPE', name);
  }
}

/** BEGIN's image identity: null, or a host (at most MAX_IMAGE_HOST characters) and decimal device and inode numbers. */
function beginImage(v: unknown): ImageIdentity | null {
  if (v === null) return null;
  if (!isPlainObject(v)) malformed('BEGIN', 'image');
  const { host, dev, ino } = v;
  const decimal = (x: unknown) => typeof x === 'string' && x.length <= MAX_U64_DIGITS && /^[0-9]+$/.test(x);
  if (typeof host !== 'string' || host.length === 0 || host.length > MAX_IMAGE_HOST || !decimal(dev) || !decimal(ino)) malformed('BEGIN', 'image');
  return { host, dev: dev as string, ino: ino as string };
}
