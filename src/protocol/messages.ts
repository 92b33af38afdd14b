// Typed messages of the migration wire: the message types, encodeMessage / encodeBlockData, and decodeMessage, which
// validates a frame into a message (control messages from JSON, data messages from their binary layout).
import { isControlMsg, nameOfMsg, type MsgName } from './constants.js';
import { decodeControl } from './control-decoder.js';
import { decodeData } from './data-decoder.js';
import type { Frame } from './frame-codec.js';
import type { Message } from './message-types.js';

export type * from './message-types.js';
export { ByteParts, asParts, type Bytes } from './byte-parts.js';
export { encodeMessage, encodeBlockData } from './message-encoder.js';

/** Decode and validate one frame. Anything malformed raises ProtocolError (the connection must close). */
export function decodeMessage(frame: Frame): Message {
  const name = nameOfMsg(frame.type) as MsgName;
  if (isControlMsg(frame.type)) return decodeControl(name, frame.payload.toBuffer());
  return decodeData(name, frame);
}
