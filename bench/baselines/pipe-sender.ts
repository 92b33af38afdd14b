// Baseline sender: a plain Node.js server that streams a file into each connection with 1 MiB positional reads,
// honouring backpressure. Started once before the timed runs, like qemu-nbd and nbdkit.
// Usage: node pipe-sender.js IMAGE (PORT | SOCKET-PATH)
import { closeSync, fstatSync, openSync, readSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';

const [image, where] = process.argv.slice(2);
if (!image || !where) throw new Error('usage: pipe-sender IMAGE PORT|SOCKET');
const CHUNK = 1 << 20;

function serve(sock: Socket): void {
  const fd = openSync(image!, 'r');
  const size = fstatSync(fd).size;
  let pos = 0;
  const pump = () => {
    while (pos < size) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - pos));
      const n = readSync(fd, buf, 0, buf.length, pos);
      pos += n;
      if (!sock.write(n === buf.length ? buf : buf.subarray(0, n))) {
        sock.once('drain', pump);
        return;
      }
    }
    closeSync(fd);
    sock.end();
  };
  sock.on('error', () => {});
  pump();
}

const server = createServer(serve);
if (/^\d+$/.test(where)) server.listen(Number(where), '127.0.0.1');
else {
  rmSync(where, { force: true });
  server.listen(where);
}
process.on('SIGTERM', () => process.exit(0));
