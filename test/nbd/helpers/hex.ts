// Golden vectors as annotated hex, independent of the encoders under test:
// hex`4E42444D41474943  # NBDMAGIC` -> Buffer; '#' starts a comment, whitespace is ignored.
export { hex } from '../../helpers/frame-builder.js';

/** ASCII text as hex digits, for names inside vectors. */
export function ascii(text: string): string {
  return Buffer.from(text, 'ascii').toString('hex');
}
