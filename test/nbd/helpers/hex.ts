// Golden vectors as annotated hex, independent of the encoders under test:
// hex`4E42444D41474943  # NBDMAGIC` -> Buffer; '#' starts a comment, whitespace is ignored.
export function hex(strings: TemplateStringsArray, ...values: unknown[]): Buffer {
  const text = strings.reduce((acc, s, i) => acc + s + (i < values.length ? String(values[i]) : ''), '');
  const digits = text
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join('')
    .replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`bad hex vector: ${digits}`);
  return Buffer.from(digits, 'hex');
}

/** ASCII text as hex digits, for names inside vectors. */
export function ascii(text: string): string {
  return Buffer.from(text, 'ascii').toString('hex');
}
