// What a terminal shows after some raw output: a small interpreter of the controls our views use (CR, LF, erase to
// end of line) over an unbounded screen without wrapping. Colours and other CSI sequences are dropped; any other
// escape is kept visibly (as '<ESC>'), so output the views should not make shows up in the text.

const CSI = /^\x1b\[([0-9;?]*)([@-~])/;

export function screenLines(raw: string): string[] {
  const rows: string[][] = [[]];
  let row = 0;
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '\r') col = 0;
    else if (ch === '\n') {
      row++;
      col = 0; // the pty's ONLCR, or our own \r\n: either way the next line starts at its left
      rows[row] ??= [];
    } else if (ch === '\x1b') {
      const m = CSI.exec(raw.slice(i, i + 32));
      if (!m) {
        put('<ESC>');
        continue;
      }
      i += m[0].length - 1;
      // EL 0 (erase to the end of the line); SGR (colours) and the rest change no text.
      if (m[2] === 'K' && (m[1] === '' || m[1] === '0')) rows[row]!.length = col;
    } else put(ch);
  }
  return rows.map((r) => r.join('').trimEnd());

  function put(text: string): void {
    const r = rows[row]!;
    for (const c of text) {
      while (r.length < col) r.push(' ');
      r[col++] = c;
    }
  }
}
