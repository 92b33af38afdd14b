// Quoting for `sh -c`: the one rule for every command line we build or print for an operator to paste.

/** `s` as one shell word: as it is when it holds only safe characters, else single-quoted. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
