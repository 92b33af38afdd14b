// Baseline receiver: connect, write every byte received into a new file with positional synchronous writes
// (fs.writeSync, the fastest Node pattern on this machine kind, BASELINES.md §1), exit at EOF.
// Usage: node pipe-receiver.js (PORT | SOCKET-PATH) OUTPUT
import { closeSync, openSync, writeSync } from 'node:fs';
import { connect } from 'node:net';

const [where, output] = process.argv.slice(2);
if (!where || !output) throw new Error('usage: pipe-receiver PORT|SOCKET OUTPUT');
const fd = openSync(output, 'w');
let pos = 0;
const sock = /^\d+$/.test(where) ? connect({ host: '127.0.0.1', port: Number(where) }) : connect({ path: where });
sock.on('data', (chunk: Buffer) => {
  let done = 0;
  while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done, pos + done);
  pos += chunk.length;
});
sock.on('end', () => {
  closeSync(fd);
  process.stdout.write(`${pos}\n`);
});
sock.on('error', (e) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
